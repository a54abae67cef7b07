//! The compute pipelines: the SPIR-V built from `shaders/` (see build.rs), one descriptor-set
//! layout and one push-constant block ([`Params`], `Params` in `shaders/common.glsl`) shared by
//! all of them, so every format runs on the same four pipelines (the format is a push
//! constant). [`Pipelines::warm_up`] runs each once on scratch memory so the driver compiles
//! them before any frame waits. Per buffer, a [`FrameJob`](super::job::FrameJob) records the
//! commands that use them.

use std::sync::Arc;
use std::time::Duration;

use ash::vk;

use super::device::Device;
use super::error::{map_oom_err, VulkanError};
use super::import::host::scratch;
use super::job::{Conversion, FrameJob};
use super::queue::FrameQueue;
use crate::format::{Fourcc, FrameLayout};

const BUFFER_SPV: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/buffer.spv"));
const IMAGE_PACKED_SPV: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/image_packed.spv"));
const IMAGE_NV12_SPV: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/image_nv12.spv"));
const FOLD_SPV: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fold.spv"));

/// The descriptor bindings every pipeline's set layout declares (`shaders/common.glsl`).
pub(crate) mod binding {
    /// Plane 0 memory (buffer path).
    pub const PLANE0: u32 = 0;
    /// Plane 1 memory (buffer path).
    pub const PLANE1: u32 = 1;
    /// Packed or luma view (image path).
    pub const LUMA_VIEW: u32 = 2;
    /// NV12 chroma view (image path).
    pub const CHROMA_VIEW: u32 = 3;
    /// RGBA out (or the display buffer the conversion writes).
    pub const RGBA: u32 = 4;
    /// Per-row sums.
    pub const ROW_SUMS: u32 = 5;
    /// The frame checksum.
    pub const CHECKSUM: u32 = 6;
}

/// Push constants, laid out as `Params` in `shaders/common.glsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Params {
    pub(crate) format: u32,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) convert: u32,
    pub(crate) offset0: u32,
    pub(crate) stride0: u32,
    pub(crate) offset1: u32,
    pub(crate) stride1: u32,
    pub(crate) rowbytes0: u32,
    pub(crate) rowbytes1: u32,
    pub(crate) rows1: u32,
    pub(crate) rows0: u32,
    pub(crate) words0: u32,
    pub(crate) words1: u32,
    pub(crate) out_offset: u32,
    pub(crate) out_stride: u32,
    pub(crate) offset2: u32,
    pub(crate) stride2: u32,
    pub(crate) rowbytes2: u32,
    pub(crate) rows2: u32,
}

/// Size of [`Params`] as pushed (every device takes 128 bytes of push constants).
pub(crate) const PARAMS_SIZE: usize = 80;

impl Params {
    /// The block as the shader reads it.
    pub(crate) fn bytes(&self) -> [u8; PARAMS_SIZE] {
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
            self.offset2,
            self.stride2,
            self.rowbytes2,
            self.rows2,
        ];
        let mut out = [0u8; PARAMS_SIZE];
        for (i, w) in v.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        out
    }
}

/// The compute pipelines and their layouts, shared by every job on a device.
pub struct Pipelines {
    pub(crate) device: Arc<Device>,
    pub(crate) set_layout: vk::DescriptorSetLayout,
    pub(crate) layout: vk::PipelineLayout,
    /// Reads plane memory as storage buffers (every format).
    pub(crate) buffer: vk::Pipeline,
    /// Reads one packed storage image (RGB, YUYV/UYVY).
    pub(crate) image_packed: vk::Pipeline,
    /// Reads NV12's luma and chroma storage views.
    pub(crate) image_nv12: vk::Pipeline,
    /// Folds the row sums into the frame checksum.
    pub(crate) fold: vk::Pipeline,
}

impl Pipelines {
    /// Builds the set layout, pipeline layout and the four pipelines.
    pub fn new(device: &Arc<Device>) -> Result<Arc<Pipelines>, VulkanError> {
        // Made handle by handle; a failure drops what exists (null handles are ignored).
        let mut p = Pipelines {
            device: device.clone(),
            set_layout: vk::DescriptorSetLayout::null(),
            layout: vk::PipelineLayout::null(),
            buffer: vk::Pipeline::null(),
            image_packed: vk::Pipeline::null(),
            image_nv12: vk::Pipeline::null(),
            fold: vk::Pipeline::null(),
        };
        let d = &device.device;
        let entry = |b: u32, ty: vk::DescriptorType| {
            vk::DescriptorSetLayoutBinding::default()
                .binding(b)
                .descriptor_type(ty)
                .descriptor_count(1)
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
        };
        let (sb, si) = (
            vk::DescriptorType::STORAGE_BUFFER,
            vk::DescriptorType::STORAGE_IMAGE,
        );
        let bindings = [
            entry(binding::PLANE0, sb),
            entry(binding::PLANE1, sb),
            entry(binding::LUMA_VIEW, si),
            entry(binding::CHROMA_VIEW, si),
            entry(binding::RGBA, sb),
            entry(binding::ROW_SUMS, sb),
            entry(binding::CHECKSUM, sb),
        ];
        // Rule: binding numbers are unique; descriptors a pipeline does not use need not be
        // written (each set is written for the pipeline it is used with).
        let info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings);
        // SAFETY: the info lives across the call.
        p.set_layout = unsafe { d.create_descriptor_set_layout(&info, None) }
            .map_err(map_oom_err("vkCreateDescriptorSetLayout"))?;
        let ranges = [vk::PushConstantRange::default()
            .stage_flags(vk::ShaderStageFlags::COMPUTE)
            .offset(0)
            .size(PARAMS_SIZE as u32)];
        let set_layouts = [p.set_layout];
        // Rule: push-constant size (64) is a multiple of 4 and within maxPushConstantsSize
        // (at least 128 on every device).
        let info = vk::PipelineLayoutCreateInfo::default()
            .set_layouts(&set_layouts)
            .push_constant_ranges(&ranges);
        // SAFETY: the info lives across the call.
        p.layout = unsafe { d.create_pipeline_layout(&info, None) }
            .map_err(map_oom_err("vkCreatePipelineLayout"))?;
        p.buffer = make_pipeline(device, p.layout, BUFFER_SPV)?;
        p.image_packed = make_pipeline(device, p.layout, IMAGE_PACKED_SPV)?;
        p.image_nv12 = make_pipeline(device, p.layout, IMAGE_NV12_SPV)?;
        p.fold = make_pipeline(device, p.layout, FOLD_SPV)?;
        Ok(Arc::new(p))
    }

    /// The device they run on.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Runs every pipeline once on scratch memory through `queue`, so the driver compiles them
    /// now (llvmpipe compiles on first dispatch and caches on disk), not while the first frame
    /// waits. The formats are push constants: this covers all of them.
    pub fn warm_up(self: &Arc<Self>, queue: &mut FrameQueue) -> Result<(), VulkanError> {
        let cases = [
            (Fourcc::XR24, false),
            (Fourcc::XR24, true),
            (Fourcc::NV12, true),
        ];
        for (fourcc, images) in cases {
            let layout = FrameLayout::linear(fourcc, 64, 2, 64)?;
            let import = scratch(&self.device, &layout, images)?;
            let job = FrameJob::new(self, import, &layout, Conversion::Rgba)?;
            queue.submit(&job)?;
            // A first compile can take long (tens of seconds on llvmpipe under emulation).
            queue.wait(Duration::MAX)?;
        }
        Ok(())
    }
}

fn make_pipeline(
    device: &Device,
    layout: vk::PipelineLayout,
    spv: &[u8],
) -> Result<vk::Pipeline, VulkanError> {
    let code = ash::util::read_spv(&mut std::io::Cursor::new(spv)).map_err(VulkanError::Shader)?;
    // Rule: codeSize is a multiple of 4 and the code is valid SPIR-V (naga validated it).
    let info = vk::ShaderModuleCreateInfo::default().code(&code);
    // SAFETY: the info lives across the call.
    let module = unsafe { device.device.create_shader_module(&info, None) }
        .map_err(map_oom_err("vkCreateShaderModule"))?;
    let stage = vk::PipelineShaderStageCreateInfo::default()
        .stage(vk::ShaderStageFlags::COMPUTE)
        .module(module)
        .name(c"main");
    let info = [vk::ComputePipelineCreateInfo::default()
        .stage(stage)
        .layout(layout)];
    // SAFETY: the infos live across the call.
    let made = unsafe {
        device
            .device
            .create_compute_pipelines(vk::PipelineCache::null(), &info, None)
    };
    // SAFETY: the module is no longer needed (pipelines keep what they need).
    unsafe { device.device.destroy_shader_module(module, None) };
    made.map(|v| v[0])
        .map_err(|(_, e)| map_oom_err("vkCreateComputePipelines")(e))
}

impl Drop for Pipelines {
    fn drop(&mut self) {
        let d = &self.device.device;
        // SAFETY: every job, which holds an Arc of these pipelines, is gone, and jobs wait for
        // their submissions before they go, so none is in use; null handles are ignored.
        unsafe {
            for p in [self.buffer, self.image_packed, self.image_nv12, self.fold] {
                d.destroy_pipeline(p, None);
            }
            d.destroy_pipeline_layout(self.layout, None);
            d.destroy_descriptor_set_layout(self.set_layout, None);
        }
    }
}
