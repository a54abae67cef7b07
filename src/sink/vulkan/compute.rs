//! The compute side: the SPIR-V built from `shaders/` (see build.rs), one descriptor-set layout
//! shared by all pipelines, and per buffer a [`Slot`]: its import, its output buffers (RGBA
//! pixels, per-row sums, the frame checksum), a descriptor set written once and a command buffer
//! recorded once — ownership acquire from the foreign queue family, convert + row sums, fold,
//! release — and submitted for every frame that buffer carries.
#![allow(unsafe_code)]

use std::sync::Arc;

use ash::vk;

use super::device::{call, Gpu, VulkanError};
use super::import::{host_buffer, Import, Objects, Reads};
use crate::format::{Fourcc, FrameLayout};

const BUFFER_SPV: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/buffer.spv"));
const IMAGE_PACKED_SPV: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/image_packed.spv"));
const IMAGE_NV12_SPV: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/image_nv12.spv"));
const FOLD_SPV: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fold.spv"));

/// Most buffers a sink keeps imported at once (the wire's id bound).
pub(crate) const MAX_SLOTS: u32 = crate::bus::wire::MAX_BUFFERS;

/// Push constants, laid out as `Params` in `shaders/common.glsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Params {
    format: u32,
    width: u32,
    height: u32,
    convert: u32,
    offset0: u32,
    stride0: u32,
    offset1: u32,
    stride1: u32,
    rowbytes0: u32,
    rowbytes1: u32,
    rows1: u32,
    rows0: u32,
    words0: u32,
    words1: u32,
    out_offset: u32,
    out_stride: u32,
}

/// Size of [`Params`] as pushed.
const PARAMS_SIZE: usize = 64;

impl Params {
    fn bytes(&self) -> [u8; PARAMS_SIZE] {
        let v = [
            self.format,
            self.width,
            self.height,
            self.convert,
            self.offset0,
            self.stride0,
            self.offset1,
            self.stride1,
            self.rowbytes0,
            self.rowbytes1,
            self.rows1,
            self.rows0,
            self.words0,
            self.words1,
            self.out_offset,
            self.out_stride,
        ];
        let mut out = [0u8; PARAMS_SIZE];
        for (i, w) in v.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        out
    }
}

/// The shader's format code (`FMT_*` in common.glsl).
fn format_code(f: Fourcc) -> Result<u32, VulkanError> {
    Ok(match f {
        Fourcc::XR24 | Fourcc::AR24 => 0,
        Fourcc::XB24 | Fourcc::AB24 => 1,
        Fourcc::RG24 => 2,
        Fourcc::YUYV => 3,
        Fourcc::UYVY => 4,
        Fourcc::NV12 => 5,
        other => return Err(VulkanError::Other(format!("{other} has no shader"))),
    })
}

/// Pipelines, layouts and pools shared by every slot.
pub(crate) struct Engine {
    pub(crate) gpu: Arc<Gpu>,
    set_layout: vk::DescriptorSetLayout,
    layout: vk::PipelineLayout,
    buffer: vk::Pipeline,
    image_packed: vk::Pipeline,
    image_nv12: vk::Pipeline,
    fold: vk::Pipeline,
    descriptor_pool: vk::DescriptorPool,
    command_pool: vk::CommandPool,
}

/// Destroys what a half-built [`Engine`] made, unless disarmed.
struct EngineGuard<'a> {
    gpu: &'a Gpu,
    pipelines: Vec<vk::Pipeline>,
    set_layout: vk::DescriptorSetLayout,
    layout: vk::PipelineLayout,
    descriptor_pool: vk::DescriptorPool,
    armed: bool,
}

impl Drop for EngineGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let d = &self.gpu.device;
        // SAFETY: everything here was made on this device and is not in use (nothing was
        // submitted); null handles are ignored by vkDestroy*.
        unsafe {
            for p in &self.pipelines {
                d.destroy_pipeline(*p, None);
            }
            d.destroy_descriptor_pool(self.descriptor_pool, None);
            d.destroy_pipeline_layout(self.layout, None);
            d.destroy_descriptor_set_layout(self.set_layout, None);
        }
    }
}

impl Engine {
    pub(crate) fn new(gpu: Arc<Gpu>) -> Result<Engine, VulkanError> {
        let d = &gpu.device;
        let mut guard = EngineGuard {
            gpu: &gpu,
            pipelines: Vec::new(),
            set_layout: vk::DescriptorSetLayout::null(),
            layout: vk::PipelineLayout::null(),
            descriptor_pool: vk::DescriptorPool::null(),
            armed: true,
        };
        let binding = |b: u32, ty: vk::DescriptorType| {
            vk::DescriptorSetLayoutBinding::default()
                .binding(b)
                .descriptor_type(ty)
                .descriptor_count(1)
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
        };
        let bindings = [
            binding(0, vk::DescriptorType::STORAGE_BUFFER), // plane 0 memory
            binding(1, vk::DescriptorType::STORAGE_BUFFER), // plane 1 memory
            binding(2, vk::DescriptorType::STORAGE_IMAGE),  // packed / luma view
            binding(3, vk::DescriptorType::STORAGE_IMAGE),  // chroma view
            binding(4, vk::DescriptorType::STORAGE_BUFFER), // RGBA out
            binding(5, vk::DescriptorType::STORAGE_BUFFER), // row sums
            binding(6, vk::DescriptorType::STORAGE_BUFFER), // checksum
        ];
        // Rule: binding numbers are unique; descriptors a pipeline does not use need not be
        // written (each set is written for the pipeline it is used with).
        let info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings);
        // SAFETY: the info lives across the call.
        guard.set_layout = unsafe { d.create_descriptor_set_layout(&info, None) }
            .map_err(call("vkCreateDescriptorSetLayout"))?;
        let ranges = [vk::PushConstantRange::default()
            .stage_flags(vk::ShaderStageFlags::COMPUTE)
            .offset(0)
            .size(PARAMS_SIZE as u32)];
        let set_layouts = [guard.set_layout];
        // Rule: push-constant size (64) is a multiple of 4 and within maxPushConstantsSize
        // (at least 128 on every device).
        let info = vk::PipelineLayoutCreateInfo::default()
            .set_layouts(&set_layouts)
            .push_constant_ranges(&ranges);
        // SAFETY: the info lives across the call.
        guard.layout = unsafe { d.create_pipeline_layout(&info, None) }
            .map_err(call("vkCreatePipelineLayout"))?;
        for spv in [BUFFER_SPV, IMAGE_PACKED_SPV, IMAGE_NV12_SPV, FOLD_SPV] {
            let p = make_pipeline(&gpu, guard.layout, spv)?;
            guard.pipelines.push(p);
        }
        let sizes = [
            vk::DescriptorPoolSize {
                ty: vk::DescriptorType::STORAGE_BUFFER,
                descriptor_count: 5 * MAX_SLOTS,
            },
            vk::DescriptorPoolSize {
                ty: vk::DescriptorType::STORAGE_IMAGE,
                descriptor_count: 2 * MAX_SLOTS,
            },
        ];
        // Rule: FREE_DESCRIPTOR_SET so a removed buffer's set can be given back alone.
        let info = vk::DescriptorPoolCreateInfo::default()
            .flags(vk::DescriptorPoolCreateFlags::FREE_DESCRIPTOR_SET)
            .max_sets(MAX_SLOTS)
            .pool_sizes(&sizes);
        // SAFETY: the info lives across the call.
        guard.descriptor_pool = unsafe { d.create_descriptor_pool(&info, None) }
            .map_err(call("vkCreateDescriptorPool"))?;
        // Rule: queueFamilyIndex is the family our queue is from.
        let info = vk::CommandPoolCreateInfo::default()
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER)
            .queue_family_index(gpu.queue_family);
        // SAFETY: the info lives across the call.
        let command_pool =
            unsafe { d.create_command_pool(&info, None) }.map_err(call("vkCreateCommandPool"))?;
        guard.armed = false;
        let (set_layout, layout, descriptor_pool) =
            (guard.set_layout, guard.layout, guard.descriptor_pool);
        let p = std::mem::take(&mut guard.pipelines);
        drop(guard);
        Ok(Engine {
            set_layout,
            layout,
            buffer: p[0],
            image_packed: p[1],
            image_nv12: p[2],
            fold: p[3],
            descriptor_pool,
            command_pool,
            gpu,
        })
    }
}

fn make_pipeline(
    gpu: &Gpu,
    layout: vk::PipelineLayout,
    spv: &[u8],
) -> Result<vk::Pipeline, VulkanError> {
    let code = ash::util::read_spv(&mut std::io::Cursor::new(spv))
        .map_err(|e| VulkanError::Other(format!("embedded SPIR-V: {e}")))?;
    // Rule: codeSize is a multiple of 4 and the code is valid SPIR-V (naga validated it).
    let info = vk::ShaderModuleCreateInfo::default().code(&code);
    // SAFETY: the info lives across the call.
    let module = unsafe { gpu.device.create_shader_module(&info, None) }
        .map_err(call("vkCreateShaderModule"))?;
    let stage = vk::PipelineShaderStageCreateInfo::default()
        .stage(vk::ShaderStageFlags::COMPUTE)
        .module(module)
        .name(c"main");
    let info = [vk::ComputePipelineCreateInfo::default()
        .stage(stage)
        .layout(layout)];
    // SAFETY: the infos live across the call; the module may be destroyed once the pipeline
    // exists.
    let r = unsafe {
        gpu.device
            .create_compute_pipelines(vk::PipelineCache::null(), &info, None)
    };
    // SAFETY: the module is no longer needed (pipelines keep what they need).
    unsafe { gpu.device.destroy_shader_module(module, None) };
    r.map(|v| v[0]).map_err(|(_, e)| VulkanError::Call {
        call: "vkCreateComputePipelines",
        result: e,
    })
}

impl Engine {
    /// Runs every pipeline once on scratch memory so the driver compiles them now (llvmpipe
    /// compiles on first dispatch and caches on disk), not while the first frame waits.
    pub(crate) fn warm_up(self: &Arc<Self>, fence: vk::Fence) -> Result<(), VulkanError> {
        let d = &self.gpu.device;
        let cases = [
            (Fourcc::XR24, false),
            (Fourcc::XR24, true),
            (Fourcc::NV12, true),
        ];
        for (fourcc, images) in cases {
            let layout = FrameLayout::linear(fourcc, 64, 2, 64)
                .map_err(|e| VulkanError::Other(e.to_string()))?;
            let import = super::import::scratch(&self.gpu, &layout, images)?;
            let slot = Slot::new(self, import, &layout, Output::Rgba)?;
            let cmds = [slot.command_buffer()];
            let submit = vk::SubmitInfo::default().command_buffers(&cmds);
            // SAFETY: the command buffer is recorded and not pending; the fence is unsignalled
            // and reset after the wait.
            unsafe {
                d.queue_submit(self.gpu.queue, &[submit], fence)
                    .map_err(call("vkQueueSubmit"))?;
                d.wait_for_fences(&[fence], true, u64::MAX)
                    .map_err(call("vkWaitForFences"))?;
                d.reset_fences(&[fence]).map_err(call("vkResetFences"))?;
            }
        }
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let d = &self.gpu.device;
        // SAFETY: the device is idle (slots wait for their frames; we wait once more) and every
        // slot, which holds an Arc of this engine, is gone.
        unsafe {
            let _ = d.device_wait_idle();
            d.destroy_command_pool(self.command_pool, None);
            d.destroy_descriptor_pool(self.descriptor_pool, None);
            for p in [self.buffer, self.image_packed, self.image_nv12, self.fold] {
                d.destroy_pipeline(p, None);
            }
            d.destroy_pipeline_layout(self.layout, None);
            d.destroy_descriptor_set_layout(self.set_layout, None);
        }
    }
}

/// Where a slot's converted pixels go.
pub(crate) enum Output {
    /// Nowhere: the slot only checksums.
    None,
    /// Tightly packed RGBA8 rows in host-visible memory (PNG pictures, the benchmark).
    Rgba,
    /// XR24 rows written straight into a display buffer, imported as a storage buffer
    /// (the conversion stage in front of a KMS plane).
    Display(Box<Import>, FrameLayout),
}

/// One imported buffer, ready to run.
pub(crate) struct Slot {
    pub(crate) import: Import,
    pub(crate) layout: FrameLayout,
    pub(crate) rows: usize,
    cmd: vk::CommandBuffer,
    set: vk::DescriptorSet,
    rgba: *const u8,
    row_sums: *const u32,
    checksum: *const u32,
    // Outputs' buffers and memory; dropped after the set and command buffer are freed.
    _outputs: Objects,
    /// The display buffer conversions are written to, if any.
    target: Option<Box<Import>>,
    engine: Arc<Engine>,
}

impl Slot {
    /// Builds the outputs, descriptor set and command buffer for an import.
    pub(crate) fn new(
        engine: &Arc<Engine>,
        import: Import,
        layout: &FrameLayout,
        output: Output,
    ) -> Result<Slot, VulkanError> {
        let gpu = &engine.gpu;
        let d = &gpu.device;
        let rows0 = layout.plane_rows(0);
        let rows1 = if layout.planes().len() > 1 {
            layout.plane_rows(1)
        } else {
            0
        };
        let rows = (rows0 + rows1) as usize;
        let mut outputs = Objects::new(gpu);
        let rgba_size = match output {
            Output::Rgba => layout.width() as u64 * layout.height() as u64 * 4,
            Output::None | Output::Display(..) => 4,
        };
        // (mode, first word, words per row, the display buffer) of the conversion.
        let (convert, out_offset, out_stride, target) =
            match output {
                Output::None => (0, 0, 0, None),
                Output::Rgba => (1, 0, 0, None),
                Output::Display(import, to) => {
                    let plane = to.planes()[0];
                    if to.fourcc() != Fourcc::XR24
                        || (to.width(), to.height()) != (layout.width(), layout.height())
                        || plane.offset % 4 != 0
                        || plane.stride % 4 != 0
                    {
                        return Err(VulkanError::Other(format!(
                        "display buffer {} {}x{} (offset {}, stride {}) cannot take a converted \
                         {}x{} frame: it must be XR24 of the same size, 4-byte aligned",
                        to.fourcc(), to.width(), to.height(), plane.offset, plane.stride,
                        layout.width(), layout.height()
                    )));
                    }
                    let Reads::Buffers { .. } = import.reads else {
                        return Err(VulkanError::Other(
                            "the display buffer must be imported as a storage buffer".into(),
                        ));
                    };
                    let offset = u32::try_from(plane.offset / 4).map_err(|_| {
                        VulkanError::Other("display buffer offset exceeds 16 GiB".into())
                    })?;
                    (2, offset, plane.stride / 4, Some(import))
                }
            };
        let (rgba_buf, rgba, _) =
            host_buffer(gpu, &mut outputs, rgba_size, vk::BufferUsageFlags::empty())?;
        let (sums_buf, row_sums, _) = host_buffer(
            gpu,
            &mut outputs,
            rows as u64 * 4,
            vk::BufferUsageFlags::empty(),
        )?;
        let (sum_buf, checksum, _) =
            host_buffer(gpu, &mut outputs, 4, vk::BufferUsageFlags::empty())?;
        let set_layouts = [engine.set_layout];
        let info = vk::DescriptorSetAllocateInfo::default()
            .descriptor_pool(engine.descriptor_pool)
            .set_layouts(&set_layouts);
        // SAFETY: the pool has room for MAX_SLOTS sets, one per slot.
        let set = unsafe { d.allocate_descriptor_sets(&info) }
            .map_err(call("vkAllocateDescriptorSets"))?[0];
        // From here on, a failure frees the set (and the outputs, by dropping them).
        let free_set = |e: VulkanError| {
            // SAFETY: the set is unused (never bound to a submitted command buffer).
            let _ = unsafe { d.free_descriptor_sets(engine.descriptor_pool, &[set]) };
            e
        };
        let buf_info = |b: vk::Buffer| {
            [vk::DescriptorBufferInfo {
                buffer: b,
                offset: 0,
                range: vk::WHOLE_SIZE,
            }]
        };
        let (src0, src1) = match import.reads {
            Reads::Buffers { buffers, .. } => (buf_info(buffers[0]), buf_info(buffers[1])),
            Reads::Images { .. } => (buf_info(vk::Buffer::null()), buf_info(vk::Buffer::null())),
        };
        let rgba_target = match target.as_ref().map(|t| t.reads) {
            Some(Reads::Buffers { buffers, .. }) => buffers[0],
            _ => rgba_buf,
        };
        let (out_rgba, out_sums, out_sum) =
            (buf_info(rgba_target), buf_info(sums_buf), buf_info(sum_buf));
        let img = |v: vk::ImageView| {
            [vk::DescriptorImageInfo {
                sampler: vk::Sampler::null(),
                image_view: v,
                image_layout: vk::ImageLayout::GENERAL,
            }]
        };
        let (img0, img1) = match import.reads {
            Reads::Images { views, .. } => (img(views[0]), img(views[1])),
            Reads::Buffers { .. } => (img(vk::ImageView::null()), img(vk::ImageView::null())),
        };
        let write = |b: u32, ty: vk::DescriptorType| {
            vk::WriteDescriptorSet::default()
                .dst_set(set)
                .dst_binding(b)
                .descriptor_type(ty)
        };
        let sb = vk::DescriptorType::STORAGE_BUFFER;
        let si = vk::DescriptorType::STORAGE_IMAGE;
        let mut writes = vec![
            write(4, sb).buffer_info(&out_rgba),
            write(5, sb).buffer_info(&out_sums),
            write(6, sb).buffer_info(&out_sum),
        ];
        let pipeline = match import.reads {
            Reads::Buffers { .. } => {
                writes.push(write(0, sb).buffer_info(&src0));
                writes.push(write(1, sb).buffer_info(&src1));
                engine.buffer
            }
            Reads::Images { nv12, .. } => {
                writes.push(write(2, si).image_info(&img0));
                if nv12 {
                    writes.push(write(3, si).image_info(&img1));
                }
                if nv12 {
                    engine.image_nv12
                } else {
                    engine.image_packed
                }
            }
        };
        // Rule: every descriptor the chosen pipeline uses is written with a live resource of
        // the declared type; image views are in GENERAL, the layout the command buffer keeps.
        // SAFETY: the set is not in use; all infos live across the call.
        unsafe { d.update_descriptor_sets(&writes, &[]) };

        let words = match import.reads {
            Reads::Buffers { words, .. } => words,
            Reads::Images { .. } => [0, 0],
        };
        let pl = |p: usize| {
            layout
                .planes()
                .get(p)
                .map_or((0, 0), |pl| (pl.offset, pl.stride))
        };
        let to32 = |v: u64, what: &str| -> Result<u32, VulkanError> {
            u32::try_from(v).map_err(|_| VulkanError::Other(format!("{what} {v} exceeds 4 GiB")))
        };
        let params = Params {
            format: format_code(layout.fourcc()).map_err(free_set)?,
            width: layout.width(),
            height: layout.height(),
            convert,
            offset0: to32(pl(0).0, "plane 0 offset").map_err(free_set)?,
            stride0: pl(0).1,
            offset1: to32(pl(1).0, "plane 1 offset").map_err(free_set)?,
            stride1: pl(1).1,
            rowbytes0: layout.plane_row_bytes(0) as u32,
            rowbytes1: if rows1 > 0 {
                layout.plane_row_bytes(1) as u32
            } else {
                0
            },
            rows0,
            rows1,
            words0: words[0],
            words1: words[1],
            out_offset,
            out_stride,
        };
        let info = vk::CommandBufferAllocateInfo::default()
            .command_pool(engine.command_pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: the pool is ours and used from this thread only.
        let cmd = unsafe { d.allocate_command_buffers(&info) }
            .map_err(call("vkAllocateCommandBuffers"))
            .map_err(free_set)?[0];
        let slot = Slot {
            import,
            layout: layout.clone(),
            rows,
            cmd,
            set,
            rgba,
            row_sums: row_sums.cast(),
            checksum: checksum.cast(),
            _outputs: outputs,
            target,
            engine: engine.clone(),
        };
        // On failure `slot` drops, freeing the command buffer, the set and the outputs.
        slot.record(pipeline, &params)?;
        Ok(slot)
    }

    fn record(&self, pipeline: vk::Pipeline, params: &Params) -> Result<(), VulkanError> {
        let e = &self.engine;
        let gpu = &e.gpu;
        let d = &gpu.device;
        let cmd = self.cmd;
        let ours = gpu.queue_family;
        let foreign = gpu.foreign_family();
        let range = vk::ImageSubresourceRange {
            aspect_mask: vk::ImageAspectFlags::COLOR,
            base_mip_level: 0,
            level_count: 1,
            base_array_layer: 0,
            layer_count: 1,
        };
        // Queue family ownership transfer of the imported memory: acquired from the foreign
        // family (the producer's device or CPU) before the shader reads it, released back after.
        // Linear / explicit-modifier images keep no hidden layout state: GENERAL both ways.
        // (source family, destination family, source access, destination access) of one direction.
        let transfer = |acquire: bool, access: vk::AccessFlags| {
            if acquire {
                (foreign, ours, vk::AccessFlags::empty(), access)
            } else {
                (ours, foreign, access, vk::AccessFlags::empty())
            }
        };
        // The frame is read; a display buffer (the conversion's target) is written.
        let targets = self.target.iter().flat_map(|t| t.foreign_buffers.iter());
        let buffers = self
            .import
            .foreign_buffers
            .iter()
            .map(|b| (b, vk::AccessFlags::SHADER_READ))
            .chain(targets.map(|b| (b, vk::AccessFlags::SHADER_WRITE)));
        let buffer_barriers = |acquire: bool| -> Vec<vk::BufferMemoryBarrier<'static>> {
            buffers
                .clone()
                .map(|(b, access)| {
                    let (src, dst, src_access, dst_access) = transfer(acquire, access);
                    vk::BufferMemoryBarrier::default()
                        .src_access_mask(src_access)
                        .dst_access_mask(dst_access)
                        .src_queue_family_index(src)
                        .dst_queue_family_index(dst)
                        .buffer(*b)
                        .offset(0)
                        .size(vk::WHOLE_SIZE)
                })
                .collect()
        };
        let image_barriers = |acquire: bool| -> Vec<vk::ImageMemoryBarrier<'static>> {
            self.import
                .foreign_images
                .iter()
                .map(|i| {
                    let (src, dst, src_access, dst_access) =
                        transfer(acquire, vk::AccessFlags::SHADER_READ);
                    vk::ImageMemoryBarrier::default()
                        .src_access_mask(src_access)
                        .dst_access_mask(dst_access)
                        .old_layout(vk::ImageLayout::GENERAL)
                        .new_layout(vk::ImageLayout::GENERAL)
                        .src_queue_family_index(src)
                        .dst_queue_family_index(dst)
                        .image(*i)
                        .subresource_range(range)
                })
                .collect()
        };
        let foreign_transfers =
            self.import.is_foreign() || self.target.as_ref().is_some_and(|t| t.is_foreign());
        // One global memory dependency: (stage, access) before → (stage, access) after.
        let memory_barrier =
            |src: (vk::PipelineStageFlags, vk::AccessFlags),
             dst: (vk::PipelineStageFlags, vk::AccessFlags)| {
                let mb = [vk::MemoryBarrier::default()
                    .src_access_mask(src.1)
                    .dst_access_mask(dst.1)];
                // SAFETY: recorded into our command buffer between begin and end (below).
                unsafe {
                    d.cmd_pipeline_barrier(
                        cmd,
                        src.0,
                        dst.0,
                        vk::DependencyFlags::empty(),
                        &mb,
                        &[],
                        &[],
                    )
                };
            };
        let begin = vk::CommandBufferBeginInfo::default();
        // SAFETY: the command buffer is ours, not pending (a new one, or one whose fence was
        // waited for), recorded on this thread; every handle recorded lives as long as the
        // slot, which frees the command buffer before destroying them.
        unsafe {
            d.begin_command_buffer(cmd, &begin)
                .map_err(call("vkBeginCommandBuffer"))?;
            if let Some(st) = &self.import.staging {
                for (src, dst, size) in &st.device_copies {
                    let region = [vk::BufferCopy {
                        src_offset: 0,
                        dst_offset: 0,
                        size: *size,
                    }];
                    d.cmd_copy_buffer(cmd, *src, *dst, &region);
                }
                if !st.device_copies.is_empty() {
                    memory_barrier(
                        (
                            vk::PipelineStageFlags::TRANSFER,
                            vk::AccessFlags::TRANSFER_WRITE,
                        ),
                        (
                            vk::PipelineStageFlags::COMPUTE_SHADER,
                            vk::AccessFlags::SHADER_READ,
                        ),
                    );
                }
            }
            if !self.import.scratch_images.is_empty() {
                let init: Vec<_> = self
                    .import
                    .scratch_images
                    .iter()
                    .map(|i| {
                        vk::ImageMemoryBarrier::default()
                            .dst_access_mask(vk::AccessFlags::SHADER_READ)
                            .old_layout(vk::ImageLayout::UNDEFINED)
                            .new_layout(vk::ImageLayout::GENERAL)
                            .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
                            .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
                            .image(*i)
                            .subresource_range(range)
                    })
                    .collect();
                d.cmd_pipeline_barrier(
                    cmd,
                    vk::PipelineStageFlags::TOP_OF_PIPE,
                    vk::PipelineStageFlags::COMPUTE_SHADER,
                    vk::DependencyFlags::empty(),
                    &[],
                    &[],
                    &init,
                );
            }
            if foreign_transfers {
                d.cmd_pipeline_barrier(
                    cmd,
                    vk::PipelineStageFlags::TOP_OF_PIPE,
                    vk::PipelineStageFlags::COMPUTE_SHADER,
                    vk::DependencyFlags::empty(),
                    &[],
                    &buffer_barriers(true),
                    &image_barriers(true),
                );
            }
            d.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, pipeline);
            d.cmd_bind_descriptor_sets(
                cmd,
                vk::PipelineBindPoint::COMPUTE,
                e.layout,
                0,
                &[self.set],
                &[],
            );
            d.cmd_push_constants(
                cmd,
                e.layout,
                vk::ShaderStageFlags::COMPUTE,
                0,
                &params.bytes(),
            );
            // One workgroup per image row.
            d.cmd_dispatch(cmd, 1, params.height, 1);
            memory_barrier(
                (
                    vk::PipelineStageFlags::COMPUTE_SHADER,
                    vk::AccessFlags::SHADER_WRITE,
                ),
                (
                    vk::PipelineStageFlags::COMPUTE_SHADER,
                    vk::AccessFlags::SHADER_READ,
                ),
            );
            // Same layout: the set and push constants stay bound across the pipeline switch.
            d.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, e.fold);
            d.cmd_dispatch(cmd, 1, 1, 1);
            memory_barrier(
                (
                    vk::PipelineStageFlags::COMPUTE_SHADER,
                    vk::AccessFlags::SHADER_WRITE,
                ),
                (vk::PipelineStageFlags::HOST, vk::AccessFlags::HOST_READ),
            );
            if foreign_transfers {
                d.cmd_pipeline_barrier(
                    cmd,
                    vk::PipelineStageFlags::COMPUTE_SHADER,
                    vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                    vk::DependencyFlags::empty(),
                    &[],
                    &buffer_barriers(false),
                    &image_barriers(false),
                );
            }
            d.end_command_buffer(cmd)
                .map_err(call("vkEndCommandBuffer"))?;
        }
        Ok(())
    }

    /// The recorded command buffer.
    pub(crate) fn command_buffer(&self) -> vk::CommandBuffer {
        self.cmd
    }

    /// The checksum the GPU computed for the last completed submission.
    pub(crate) fn checksum(&self) -> u32 {
        // SAFETY: a live, coherent, 4-byte host mapping; the GPU's write was made available to
        // the host by the HOST barrier and the fence wait that preceded this call.
        unsafe { self.checksum.read_volatile() }
    }

    /// The per-row sums of the last completed submission.
    pub(crate) fn row_sums(&self) -> Vec<u32> {
        // SAFETY: as for `checksum`; the mapping holds `rows` u32s.
        unsafe { std::slice::from_raw_parts(self.row_sums, self.rows) }.to_vec()
    }

    /// The RGBA pixels of the last completed submission (if it converted).
    pub(crate) fn rgba(&self) -> Vec<u8> {
        let n = self.layout.width() as usize * self.layout.height() as usize * 4;
        // SAFETY: as for `checksum`; the mapping holds width * height * 4 bytes.
        unsafe { std::slice::from_raw_parts(self.rgba, n) }.to_vec()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let e = &self.engine;
        let d = &e.gpu.device;
        // SAFETY: no submission of this command buffer is pending (frames wait for their fence;
        // we wait for the queue to idle to be sure); the set is freed back to its pool.
        unsafe {
            let _ = d.queue_wait_idle(e.gpu.queue);
            d.free_command_buffers(e.command_pool, &[self.cmd]);
            let _ = d.free_descriptor_sets(e.descriptor_pool, &[self.set]);
        }
        // `outputs` and `import` drop after this, destroying their buffers and memory.
    }
}
