//! One imported buffer, ready to run: a [`FrameJob`] owns the buffer's [`Import`], its outputs
//! (RGBA pixels, per-row sums, the frame checksum, in host-visible memory), a descriptor set
//! written once and a command buffer recorded once — ownership acquire from the foreign queue
//! family, convert + row sums, fold, release — submitted (by a
//! [`FrameQueue`](super::queue::FrameQueue)) for every frame that buffer carries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ash::vk;

mod record;

use super::compute::{binding, Params, Pipelines};
use super::conv::shader_format;
use super::error::{map_oom_err, map_pool_err, VulkanError};
use super::import::{Import, Reads};
use super::memory::{host_buffer, DeviceObjects};
use crate::format::{Fourcc, FrameLayout};

/// What a job does with the frame besides checksumming it.
pub enum Conversion {
    /// Nothing: the job only checksums.
    ChecksumOnly,
    /// Converts to tightly packed RGBA8 rows in host-visible memory ([`FrameJob::rgba`]).
    Rgba,
    /// Converts to XR24 rows written straight into a display buffer of the same size, imported
    /// as a storage buffer (the conversion stage in front of a KMS plane).
    IntoDisplay {
        /// The display buffer's import (buffer path).
        target: Box<Import>,
        /// Its layout: XR24, the frame's size, 4-byte aligned offset and stride.
        layout: FrameLayout,
    },
}

/// Where the shader writes converted pixels: `(convert mode, first word, words per row)`.
fn conversion_params(
    conversion: &Conversion,
    frame: &FrameLayout,
) -> Result<(u32, u32, u32), VulkanError> {
    let (target, to) = match conversion {
        Conversion::ChecksumOnly => return Ok((0, 0, 0)),
        Conversion::Rgba => return Ok((1, 0, 0)),
        Conversion::IntoDisplay { target, layout } => (target, layout),
    };
    let plane = to.planes()[0];
    if to.fourcc() != Fourcc::XR24
        || (to.width(), to.height()) != (frame.width(), frame.height())
        || plane.offset % 4 != 0
        || plane.stride % 4 != 0
    {
        return Err(VulkanError::unsupported(format!(
            "display buffer {} {}x{} (offset {}, stride {}) cannot take a converted {}x{} frame: \
             it must be XR24 of the same size, 4-byte aligned",
            to.fourcc(),
            to.width(),
            to.height(),
            plane.offset,
            plane.stride,
            frame.width(),
            frame.height()
        )));
    }
    let Reads::Buffers { .. } = target.reads else {
        return Err(VulkanError::unsupported(
            "the display buffer must be imported as a storage buffer",
        ));
    };
    let offset = u32::try_from(plane.offset / 4)
        .map_err(|_| VulkanError::unsupported("display buffer offset exceeds 16 GiB"))?;
    Ok((2, offset, plane.stride / 4))
}

/// The job's host-visible outputs and their persistent mappings.
struct Outputs {
    rgba: (vk::Buffer, *const u8),
    row_sums: (vk::Buffer, *const u32),
    checksum: (vk::Buffer, *const u32),
    /// Owns the buffers and memory above.
    _objects: DeviceObjects,
}

impl Outputs {
    fn new(pipelines: &Pipelines, rgba_bytes: u64, rows: usize) -> Result<Outputs, VulkanError> {
        let device = &pipelines.device;
        let mut objects = DeviceObjects::new(device);
        let mut host = |size: u64| {
            host_buffer(device, &mut objects, size, vk::BufferUsageFlags::empty())
                .map(|(b, ptr, _)| (b, ptr.cast_const()))
        };
        let rgba = host(rgba_bytes)?;
        let row_sums = host(rows as u64 * 4)?;
        let checksum = host(4)?;
        Ok(Outputs {
            rgba,
            row_sums: (row_sums.0, row_sums.1.cast()),
            checksum: (checksum.0, checksum.1.cast()),
            _objects: objects,
        })
    }
}

/// The job's descriptor set, in a pool of its own (one set: a job's buffers come and go alone).
struct Descriptors {
    pool: vk::DescriptorPool,
    set: vk::DescriptorSet,
}

impl Descriptors {
    fn new(pipelines: &Pipelines) -> Result<Descriptors, VulkanError> {
        let d = &pipelines.device.device;
        let sizes = [
            vk::DescriptorPoolSize {
                ty: vk::DescriptorType::STORAGE_BUFFER,
                descriptor_count: 5,
            },
            vk::DescriptorPoolSize {
                ty: vk::DescriptorType::STORAGE_IMAGE,
                descriptor_count: 2,
            },
        ];
        let info = vk::DescriptorPoolCreateInfo::default()
            .max_sets(1)
            .pool_sizes(&sizes);
        // SAFETY: the info lives across the call.
        let pool = unsafe { d.create_descriptor_pool(&info, None) }
            .map_err(map_oom_err("vkCreateDescriptorPool"))?;
        let set_layouts = [pipelines.set_layout];
        let info = vk::DescriptorSetAllocateInfo::default()
            .descriptor_pool(pool)
            .set_layouts(&set_layouts);
        // SAFETY: the pool is new, with room for this one set.
        match unsafe { d.allocate_descriptor_sets(&info) } {
            Ok(sets) => Ok(Descriptors { pool, set: sets[0] }),
            Err(e) => {
                // SAFETY: the pool is unused.
                unsafe { d.destroy_descriptor_pool(pool, None) };
                Err(map_pool_err("vkAllocateDescriptorSets")(e))
            }
        }
    }

    /// Points the set at the frame's memory and the outputs; returns the pipeline that reads
    /// that kind of memory.
    fn write(
        &self,
        pipelines: &Pipelines,
        reads: Reads,
        outputs: &Outputs,
        rgba_target: vk::Buffer,
    ) -> vk::Pipeline {
        let whole = |buffer: vk::Buffer| {
            [vk::DescriptorBufferInfo {
                buffer,
                offset: 0,
                range: vk::WHOLE_SIZE,
            }]
        };
        let general = |image_view: vk::ImageView| {
            [vk::DescriptorImageInfo {
                sampler: vk::Sampler::null(),
                image_view,
                image_layout: vk::ImageLayout::GENERAL,
            }]
        };
        let (out_rgba, out_sums, out_sum) = (
            whole(rgba_target),
            whole(outputs.row_sums.0),
            whole(outputs.checksum.0),
        );
        let (src0, src1, img0, img1) = match reads {
            Reads::Buffers { buffers, .. } => (
                whole(buffers[0]),
                whole(buffers[1]),
                general(vk::ImageView::null()),
                general(vk::ImageView::null()),
            ),
            Reads::Images { views, .. } => (
                whole(vk::Buffer::null()),
                whole(vk::Buffer::null()),
                general(views[0]),
                general(views[1]),
            ),
        };
        let write = |b: u32, ty: vk::DescriptorType| {
            vk::WriteDescriptorSet::default()
                .dst_set(self.set)
                .dst_binding(b)
                .descriptor_type(ty)
        };
        let sb = vk::DescriptorType::STORAGE_BUFFER;
        let si = vk::DescriptorType::STORAGE_IMAGE;
        let mut writes = vec![
            write(binding::RGBA, sb).buffer_info(&out_rgba),
            write(binding::ROW_SUMS, sb).buffer_info(&out_sums),
            write(binding::CHECKSUM, sb).buffer_info(&out_sum),
        ];
        let pipeline = match reads {
            Reads::Buffers { .. } => {
                writes.push(write(binding::PLANE0, sb).buffer_info(&src0));
                writes.push(write(binding::PLANE1, sb).buffer_info(&src1));
                pipelines.buffer
            }
            Reads::Images { nv12: false, .. } => {
                writes.push(write(binding::LUMA_VIEW, si).image_info(&img0));
                pipelines.image_packed
            }
            Reads::Images { nv12: true, .. } => {
                writes.push(write(binding::LUMA_VIEW, si).image_info(&img0));
                writes.push(write(binding::CHROMA_VIEW, si).image_info(&img1));
                pipelines.image_nv12
            }
        };
        // Rule: every descriptor the chosen pipeline uses is written with a live resource of
        // the declared type; image views are in GENERAL, the layout the command buffer keeps.
        // SAFETY: the set is not in use (new); all infos live across the call.
        unsafe { pipelines.device.device.update_descriptor_sets(&writes, &[]) };
        pipeline
    }
}

/// The push constants for a frame of `layout` read through `reads`.
fn params(
    layout: &FrameLayout,
    reads: Reads,
    (convert, out_offset, out_stride): (u32, u32, u32),
) -> Result<Params, VulkanError> {
    let words = match reads {
        Reads::Buffers { words, .. } => words,
        Reads::Images { .. } => [0, 0],
    };
    let plane = |p: usize| {
        layout
            .planes()
            .get(p)
            .map_or((0, 0), |pl| (pl.offset, pl.stride))
    };
    let to32 = |v: u64, what: &str| {
        u32::try_from(v).map_err(|_| VulkanError::unsupported(format!("{what} {v} exceeds 4 GiB")))
    };
    let two_planes = layout.planes().len() > 1;
    let three_planes = layout.planes().len() > 2;
    // The shader reads plane 2 (YU12's V) through plane 1's binding: they must share memory.
    if three_planes && layout.planes()[2].fd_index != layout.planes()[1].fd_index {
        return Err(VulkanError::unsupported(format!(
            "{}: planes 1 and 2 in different memory objects",
            layout.fourcc()
        )));
    }
    if three_planes && matches!(reads, Reads::Images { .. }) {
        return Err(VulkanError::unsupported(format!(
            "{} has no image path",
            layout.fourcc()
        )));
    }
    Ok(Params {
        format: shader_format(layout.fourcc())?,
        width: layout.width(),
        height: layout.height(),
        convert,
        offset0: to32(plane(0).0, "plane 0 offset")?,
        stride0: plane(0).1,
        offset1: to32(plane(1).0, "plane 1 offset")?,
        stride1: plane(1).1,
        rowbytes0: layout.plane_row_bytes(0) as u32,
        rowbytes1: if two_planes {
            layout.plane_row_bytes(1) as u32
        } else {
            0
        },
        rows0: layout.plane_rows(0),
        rows1: if two_planes { layout.plane_rows(1) } else { 0 },
        words0: words[0],
        words1: words[1],
        out_offset,
        out_stride,
        offset2: to32(plane(2).0, "plane 2 offset")?,
        stride2: plane(2).1,
        rowbytes2: if three_planes {
            layout.plane_row_bytes(2) as u32
        } else {
            0
        },
        rows2: if three_planes {
            layout.plane_rows(2)
        } else {
            0
        },
    })
}

/// One imported buffer with its outputs and recorded commands (see the module docs).
pub struct FrameJob {
    import: Import,
    layout: FrameLayout,
    rows: usize,
    /// Bytes of RGBA output (0: the job does not convert to RGBA).
    rgba_len: usize,
    command_pool: vk::CommandPool,
    cmd: vk::CommandBuffer,
    descriptors: Descriptors,
    outputs: Outputs,
    /// The display buffer conversions are written to, if any.
    target: Option<Box<Import>>,
    /// Two timestamps around the transfer step (the staging path's GPU copy, the ownership
    /// acquire of imported memory), for [`FrameJob::transfer_gpu_ns`]; `None`: not asked for,
    /// or the queue has no timestamps.
    timestamps: Option<vk::QueryPool>,
    /// Set while a submission of `cmd` is pending (a queue clears it once it completed).
    pub(crate) busy: Arc<AtomicBool>,
    pub(crate) pipelines: Arc<Pipelines>,
}

impl FrameJob {
    /// Builds the outputs, descriptor set and command buffer for `import`, a buffer of
    /// `layout`; `conversion` says where converted pixels go.
    pub fn new(
        pipelines: &Arc<Pipelines>,
        import: Import,
        layout: &FrameLayout,
        conversion: Conversion,
    ) -> Result<FrameJob, VulkanError> {
        Self::build(pipelines, import, layout, conversion, false)
    }

    /// [`FrameJob::new`], with GPU timestamps around the transfer step of each submission
    /// (where the queue has timestamps): [`FrameJob::transfer_gpu_ns`]. For benchmarks.
    pub fn timed(
        pipelines: &Arc<Pipelines>,
        import: Import,
        layout: &FrameLayout,
        conversion: Conversion,
    ) -> Result<FrameJob, VulkanError> {
        Self::build(pipelines, import, layout, conversion, true)
    }

    fn build(
        pipelines: &Arc<Pipelines>,
        import: Import,
        layout: &FrameLayout,
        conversion: Conversion,
        timed: bool,
    ) -> Result<FrameJob, VulkanError> {
        let device = &pipelines.device;
        let placement = conversion_params(&conversion, layout)?;
        let params = params(layout, import.reads, placement)?;
        let rows = (params.rows0 + params.rows1 + params.rows2) as usize;
        let rgba_bytes = match conversion {
            Conversion::Rgba => layout.width() as u64 * layout.height() as u64 * 4,
            // A placeholder: the binding must hold some buffer.
            Conversion::ChecksumOnly | Conversion::IntoDisplay { .. } => 4,
        };
        let converts_to_rgba = matches!(conversion, Conversion::Rgba);
        let target = match conversion {
            Conversion::IntoDisplay { target, .. } => Some(target),
            _ => None,
        };
        let outputs = Outputs::new(pipelines, rgba_bytes, rows)?;
        let descriptors = Descriptors::new(pipelines)?;
        // Rule: queueFamilyIndex is the family our queue is from. A pool per job: its one
        // command buffer is recorded and freed with the job alone.
        let info = vk::CommandPoolCreateInfo::default().queue_family_index(device.queue_family);
        // SAFETY: the info lives across the call.
        let command_pool = unsafe { device.device.create_command_pool(&info, None) }
            .map_err(map_oom_err("vkCreateCommandPool"));
        let command_pool = match command_pool {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: the descriptor pool is unused (nothing recorded yet).
                unsafe {
                    device
                        .device
                        .destroy_descriptor_pool(descriptors.pool, None)
                };
                return Err(e);
            }
        };
        let mut job = FrameJob {
            import,
            layout: layout.clone(),
            rows,
            rgba_len: if converts_to_rgba {
                rgba_bytes as usize
            } else {
                0
            },
            command_pool,
            cmd: vk::CommandBuffer::null(),
            descriptors,
            outputs,
            target,
            timestamps: None,
            busy: Arc::new(AtomicBool::new(false)),
            pipelines: pipelines.clone(),
        };
        // From here on a failure drops `job`, which frees everything made so far.
        if timed && device.timestamps.is_some() {
            // Rule: a TIMESTAMP pool needs no pipeline statistics; its queries are reset in the
            // command buffer before each write.
            let info = vk::QueryPoolCreateInfo::default()
                .query_type(vk::QueryType::TIMESTAMP)
                .query_count(2);
            // SAFETY: the info lives across the call.
            let pool = unsafe { device.device.create_query_pool(&info, None) }
                .map_err(map_oom_err("vkCreateQueryPool"))?;
            job.timestamps = Some(pool);
        }
        let rgba_target = match job.target.as_ref().map(|t| t.reads) {
            Some(Reads::Buffers { buffers, .. }) => buffers[0],
            _ => job.outputs.rgba.0,
        };
        let pipeline =
            job.descriptors
                .write(pipelines, job.import.reads, &job.outputs, rgba_target);
        let info = vk::CommandBufferAllocateInfo::default()
            .command_pool(job.command_pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: the pool is the job's own.
        job.cmd = unsafe { device.device.allocate_command_buffers(&info) }
            .map_err(map_oom_err("vkAllocateCommandBuffers"))?[0];
        job.record(pipeline, &params)?;
        Ok(job)
    }

    /// The import the job reads.
    pub fn import(&self) -> &Import {
        &self.import
    }

    /// The frame layout it was built for.
    pub fn layout(&self) -> &FrameLayout {
        &self.layout
    }

    /// The recorded command buffer.
    pub(crate) fn command_buffer(&self) -> vk::CommandBuffer {
        self.cmd
    }

    /// Whether a submission of the job is pending.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// For the staging path, the CPU copy of the buffer's current contents into the memory the
    /// job reads (call it before each submission); the bytes copied (0 on zero-copy paths).
    pub fn stage(&mut self) -> Result<u64, VulkanError> {
        if self.is_busy() {
            return Err(VulkanError::InFlight {
                what: "the staging memory",
            });
        }
        self.import.stage()
    }

    /// GPU time of the last completed submission's transfer step, in nanoseconds (`None`
    /// while one is pending, or for a job built without timestamps: [`FrameJob::timed`]).
    pub fn transfer_gpu_ns(&self) -> Option<f64> {
        let pool = self.timestamps.filter(|_| !self.is_busy())?;
        let (bits, period) = self.pipelines.device.timestamps?;
        let mut ticks = [0u64; 2];
        // SAFETY: the pool is the job's, both queries were written by the completed
        // submission (no submission is pending: checked); the slice holds two 64-bit results.
        unsafe {
            self.pipelines.device.device.get_query_pool_results(
                pool,
                0,
                &mut ticks,
                vk::QueryResultFlags::TYPE_64,
            )
        }
        .ok()?;
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        Some((ticks[1].wrapping_sub(ticks[0]) & mask) as f64 * period)
    }

    /// The checksum of the last completed submission (`None` while one is pending).
    pub fn checksum(&self) -> Option<u32> {
        // SAFETY: a live, coherent, 4-byte host mapping, read without a reference; no
        // submission is pending (checked), and the last one's write was made available to the
        // host by its HOST barrier and the fence wait that completed it.
        (!self.is_busy()).then(|| unsafe { self.outputs.checksum.1.read_volatile() })
    }

    /// The per-row sums of the last completed submission (`None` while one is pending).
    pub fn row_sums(&self) -> Option<Vec<u32>> {
        (!self.is_busy()).then(|| read_mapped(self.outputs.row_sums.1, self.rows))
    }

    /// The RGBA pixels of the last completed submission, if the job converts to RGBA (`None`
    /// while one is pending).
    pub fn rgba(&self) -> Option<Vec<u8>> {
        let converts = self.rgba_len > 0;
        (converts && !self.is_busy()).then(|| read_mapped(self.outputs.rgba.1, self.rgba_len))
    }
}

/// Copies `n` values out of a host mapping of at least `n` (the job's outputs, sized at
/// creation), without making a reference to device-written memory.
fn read_mapped<T: Copy + Default>(ptr: *const T, n: usize) -> Vec<T> {
    let mut out = vec![T::default(); n];
    // SAFETY: `ptr` is a live, coherent mapping of at least `n` values (FrameJob's outputs:
    // rgba holds `rgba_len` bytes when converting, row sums `rows` words), not
    // overlapping the new vector; callers check that no submission is writing it.
    unsafe { std::ptr::copy_nonoverlapping(ptr, out.as_mut_ptr(), n) };
    out
}

impl Drop for FrameJob {
    fn drop(&mut self) {
        let device = &self.pipelines.device;
        if self.is_busy() {
            // The command buffer is pending: wait for the queue before freeing what it uses.
            let _ = device.wait_queue_idle();
        }
        let d = &device.device;
        // SAFETY: no submission of the command buffer is pending (checked, or waited for);
        // destroying the pools frees the command buffer and the set. The outputs and imports
        // drop after this, destroying their buffers and memory.
        unsafe {
            d.destroy_command_pool(self.command_pool, None);
            d.destroy_descriptor_pool(self.descriptors.pool, None);
            if let Some(pool) = self.timestamps {
                d.destroy_query_pool(pool, None);
            }
        }
    }
}
