//! The publisher's buffer pool: a slot per buffer id with its buffer, a writable mapping (made
//! on first loan, so buffers a camera fills are never mapped), how many consumers hold it (a
//! `latest` consumer's reserved mailbox frame counts as a hold), the release fences the
//! consumers gave back, and whether it is leaving the pool (a format change retires every
//! buffer: each consumer is told `RemoveBuffer` once it no longer holds it, and the id is
//! reused once no one does).

use crate::buffer::{Buffer, BufferError, BufferMapping};
use crate::bus::wire::MAX_BUFFERS;
use crate::sync::SyncFile;

/// Where a slot is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    /// No one has it: it may be loaned (once its release fences signalled).
    Free,
    /// The application is filling it.
    Loaned,
    /// Sent; `holders` consumers (and mailboxes) still have it.
    Out { holders: u32 },
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) buffer: Buffer,
    pub(super) mapping: Option<BufferMapping>,
    pub(super) state: SlotState,
    pub(super) fences: Vec<SyncFile>,
    pub(super) retiring: bool,
    /// Freed since the last `take_released` (sources that requeue to a camera).
    pub(super) returned: bool,
}

/// The slots, by id.
#[derive(Debug, Default)]
pub(super) struct Pool {
    slots: Vec<Option<Slot>>,
    /// Where the round-robin search for a free slot starts.
    cursor: usize,
}

impl Pool {
    pub(super) fn get(&self, id: u32) -> Option<&Slot> {
        self.slots.get(id as usize)?.as_ref()
    }

    pub(super) fn get_mut(&mut self, id: u32) -> Option<&mut Slot> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    /// Ids of the buffers in the pool (retiring ones included).
    pub(super) fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as u32)
    }

    /// Ids of the buffers that stay (not retiring): what a new consumer is told about.
    pub(super) fn current_ids(&self) -> Vec<u32> {
        self.ids()
            .filter(|&i| self.get(i).is_some_and(|s| !s.retiring))
            .collect()
    }

    /// Adds a buffer under the lowest unused id.
    pub(super) fn insert(&mut self, buffer: Buffer) -> Option<u32> {
        let id = match self.slots.iter().position(|s| s.is_none()) {
            Some(i) => i,
            None if self.slots.len() < MAX_BUFFERS as usize => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return None,
        };
        self.slots[id] = Some(Slot {
            buffer,
            mapping: None,
            state: SlotState::Free,
            fences: Vec::new(),
            retiring: false,
            returned: false,
        });
        Some(id as u32)
    }

    /// Removes slot `id` (a retired one no one holds).
    pub(super) fn remove(&mut self, id: u32) {
        if let Some(s) = self.slots.get_mut(id as usize) {
            *s = None;
        }
    }

    /// The next free, non-retiring slot after the last one handed out (so a slot whose release
    /// fence timed out is tried again last).
    pub(super) fn next_free(&mut self) -> Option<u32> {
        let n = self.slots.len();
        let found = (0..n).map(|k| (self.cursor + k) % n).find(|&i| {
            self.slots[i]
                .as_ref()
                .is_some_and(|s| s.state == SlotState::Free && !s.retiring)
        })?;
        self.cursor = (found + 1) % n;
        Some(found as u32)
    }

    /// A writable mapping of slot `id`, made on first use (`None`: no such slot).
    pub(super) fn mapping(&mut self, id: u32) -> Option<Result<&mut BufferMapping, BufferError>> {
        let slot = self.get_mut(id)?;
        let mapping = match slot.mapping.take() {
            Some(m) => m,
            None => match slot.buffer.map(true).map(|m| m.with_id(id)) {
                Ok(m) => m,
                Err(e) => return Some(Err(e)),
            },
        };
        Some(Ok(slot.mapping.insert(mapping)))
    }

    /// `Err` if a consumer shrank slot `id`'s memory under our mapping (a POSIX shm object
    /// truncated through a read-write re-open): what was written is lost, and must not go out.
    pub(super) fn check_intact(&self, id: u32) -> Result<(), BufferError> {
        match self.get(id).and_then(|s| s.mapping.as_ref()) {
            Some(m) => m.check_intact(),
            None => Ok(()),
        }
    }

    /// One holder fewer; true if the slot became free (or, retiring, can go).
    pub(super) fn unhold(&mut self, id: u32) -> bool {
        let Some(slot) = self.get_mut(id) else {
            return false;
        };
        match &mut slot.state {
            SlotState::Out { holders } if *holders > 1 => {
                *holders -= 1;
                false
            }
            SlotState::Out { .. } => {
                slot.state = SlotState::Free;
                slot.returned = true;
                true
            }
            _ => false,
        }
    }

    /// One holder more (a send, or a mailbox reservation).
    pub(super) fn hold(&mut self, id: u32) {
        if let Some(slot) = self.get_mut(id) {
            slot.state = match slot.state {
                SlotState::Out { holders } => SlotState::Out {
                    holders: holders + 1,
                },
                _ => SlotState::Out { holders: 1 },
            };
        }
    }

    /// Buffers in the pool, retiring ones excluded.
    pub(super) fn len(&self) -> usize {
        self.slots.iter().flatten().filter(|s| !s.retiring).count()
    }

    /// Ids freed since the last call (for sources that give buffers back to a device).
    pub(super) fn take_returned(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if let Some(s) = s {
                if std::mem::take(&mut s.returned) && !s.retiring {
                    out.push(i as u32);
                }
            }
        }
        out
    }
}
