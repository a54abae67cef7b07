//! Recording a job's command buffer, once: the staging path's GPU copy, scratch images brought
//! to GENERAL, the ownership acquire of imported memory from the foreign queue family, the
//! convert + row-sums dispatch, the fold into the checksum, and the release back.

use ash::vk;

use super::FrameJob;
use crate::gpu::vulkan::compute::Params;
use crate::gpu::vulkan::error::{map_oom_err, VulkanError};

/// One colour subresource: level 0, layer 0.
const COLOR: vk::ImageSubresourceRange = vk::ImageSubresourceRange {
    aspect_mask: vk::ImageAspectFlags::COLOR,
    base_mip_level: 0,
    level_count: 1,
    base_array_layer: 0,
    layer_count: 1,
};

/// A memory dependency: (stage, access) before → (stage, access) after.
type Dependency = (
    (vk::PipelineStageFlags, vk::AccessFlags),
    (vk::PipelineStageFlags, vk::AccessFlags),
);

/// Shader writes, then shader reads (the fold reads the row sums the convert pass wrote).
const CONVERT_TO_FOLD: Dependency = (
    (
        vk::PipelineStageFlags::COMPUTE_SHADER,
        vk::AccessFlags::SHADER_WRITE,
    ),
    (
        vk::PipelineStageFlags::COMPUTE_SHADER,
        vk::AccessFlags::SHADER_READ,
    ),
);

/// Shader writes, then the host reads the outputs.
const FOLD_TO_HOST: Dependency = (
    (
        vk::PipelineStageFlags::COMPUTE_SHADER,
        vk::AccessFlags::SHADER_WRITE,
    ),
    (vk::PipelineStageFlags::HOST, vk::AccessFlags::HOST_READ),
);

/// The staging copy's transfer writes, then the shader reads them.
const COPY_TO_SHADER: Dependency = (
    (
        vk::PipelineStageFlags::TRANSFER,
        vk::AccessFlags::TRANSFER_WRITE,
    ),
    (
        vk::PipelineStageFlags::COMPUTE_SHADER,
        vk::AccessFlags::SHADER_READ,
    ),
);

impl FrameJob {
    /// Records the command buffer (see the module docs).
    pub(super) fn record(
        &self,
        pipeline: vk::Pipeline,
        params: &Params,
    ) -> Result<(), VulkanError> {
        let p = &self.pipelines;
        let d = &p.device.device;
        let cmd = self.cmd;
        let foreign =
            self.import.is_foreign() || self.target.as_ref().is_some_and(|t| t.is_foreign());
        // SAFETY: the command buffer is the job's, new (not pending), recorded on this thread;
        // every handle recorded lives as long as the job, which frees the command buffer
        // before destroying them.
        unsafe {
            d.begin_command_buffer(cmd, &vk::CommandBufferBeginInfo::default())
                .map_err(map_oom_err("vkBeginCommandBuffer"))?;
            // The transfer step, between two timestamps when timed: everything that brings the
            // frame's memory to the shader (the staging copy, the ownership acquire).
            if let Some(pool) = self.timestamps {
                d.cmd_reset_query_pool(cmd, pool, 0, 2);
                d.cmd_write_timestamp(cmd, vk::PipelineStageFlags::TOP_OF_PIPE, pool, 0);
            }
            self.record_staging_copy();
            self.record_scratch_init();
            if foreign {
                self.record_ownership(true);
            }
            if let Some(pool) = self.timestamps {
                // Written once every command before it has completed.
                d.cmd_write_timestamp(cmd, vk::PipelineStageFlags::BOTTOM_OF_PIPE, pool, 1);
            }
            d.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, pipeline);
            d.cmd_bind_descriptor_sets(
                cmd,
                vk::PipelineBindPoint::COMPUTE,
                p.layout,
                0,
                &[self.descriptors.set],
                &[],
            );
            d.cmd_push_constants(
                cmd,
                p.layout,
                vk::ShaderStageFlags::COMPUTE,
                0,
                &params.bytes(),
            );
            // One workgroup per image row.
            d.cmd_dispatch(cmd, 1, params.height, 1);
            self.record_dependency(CONVERT_TO_FOLD);
            // Same layout: the set and push constants stay bound across the pipeline switch.
            d.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, p.fold);
            d.cmd_dispatch(cmd, 1, 1, 1);
            self.record_dependency(FOLD_TO_HOST);
            if foreign {
                self.record_ownership(false);
            }
            d.end_command_buffer(cmd)
                .map_err(map_oom_err("vkEndCommandBuffer"))?;
        }
        Ok(())
    }

    /// One global memory barrier.
    fn record_dependency(&self, ((src_stage, src), (dst_stage, dst)): Dependency) {
        let barrier = [vk::MemoryBarrier::default()
            .src_access_mask(src)
            .dst_access_mask(dst)];
        // SAFETY: recorded into the job's command buffer between begin and end.
        unsafe {
            self.pipelines.device.device.cmd_pipeline_barrier(
                self.cmd,
                src_stage,
                dst_stage,
                vk::DependencyFlags::empty(),
                &barrier,
                &[],
                &[],
            )
        };
    }

    /// The staging path's copy from host-visible into device-local memory, if it has one.
    fn record_staging_copy(&self) {
        let Some(staging) = &self.import.staging else {
            return;
        };
        if staging.device_copies.is_empty() {
            return;
        }
        for &(src, dst, size) in &staging.device_copies {
            let region = [vk::BufferCopy {
                src_offset: 0,
                dst_offset: 0,
                size,
            }];
            // SAFETY: recorded between begin and end; both buffers live as long as the job.
            unsafe {
                self.pipelines
                    .device
                    .device
                    .cmd_copy_buffer(self.cmd, src, dst, &region)
            };
        }
        self.record_dependency(COPY_TO_SHADER);
    }

    /// Scratch images (the warm-up's) go from UNDEFINED to GENERAL before the shader reads them.
    fn record_scratch_init(&self) {
        if self.import.scratch_images.is_empty() {
            return;
        }
        let init: Vec<_> = self
            .import
            .scratch_images
            .iter()
            .map(|&image| {
                vk::ImageMemoryBarrier::default()
                    .dst_access_mask(vk::AccessFlags::SHADER_READ)
                    .old_layout(vk::ImageLayout::UNDEFINED)
                    .new_layout(vk::ImageLayout::GENERAL)
                    .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
                    .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
                    .image(image)
                    .subresource_range(COLOR)
            })
            .collect();
        // SAFETY: recorded between begin and end; the images live as long as the job.
        unsafe {
            self.pipelines.device.device.cmd_pipeline_barrier(
                self.cmd,
                vk::PipelineStageFlags::TOP_OF_PIPE,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::DependencyFlags::empty(),
                &[],
                &[],
                &init,
            )
        };
    }

    /// The queue family ownership transfer of the imported memory: acquired from the foreign
    /// family (the producer's device or CPU) before the shader reads it (`acquire`), released
    /// back after. The frame is read; a display buffer (the conversion's target) is written.
    /// Linear / explicit-modifier images keep no hidden layout state: GENERAL both ways.
    fn record_ownership(&self, acquire: bool) {
        let device = &self.pipelines.device;
        let (ours, foreign) = (device.queue_family, device.foreign_family());
        // (source family, destination family, source access, destination access).
        let transfer = |access: vk::AccessFlags| {
            if acquire {
                (foreign, ours, vk::AccessFlags::empty(), access)
            } else {
                (ours, foreign, access, vk::AccessFlags::empty())
            }
        };
        let targets = self.target.iter().flat_map(|t| t.foreign_buffers.iter());
        let buffers: Vec<_> = self
            .import
            .foreign_buffers
            .iter()
            .map(|b| (b, vk::AccessFlags::SHADER_READ))
            .chain(targets.map(|b| (b, vk::AccessFlags::SHADER_WRITE)))
            .map(|(&buffer, access)| {
                let (src, dst, src_access, dst_access) = transfer(access);
                vk::BufferMemoryBarrier::default()
                    .src_access_mask(src_access)
                    .dst_access_mask(dst_access)
                    .src_queue_family_index(src)
                    .dst_queue_family_index(dst)
                    .buffer(buffer)
                    .offset(0)
                    .size(vk::WHOLE_SIZE)
            })
            .collect();
        let images: Vec<_> = self
            .import
            .foreign_images
            .iter()
            .map(|&image| {
                let (src, dst, src_access, dst_access) = transfer(vk::AccessFlags::SHADER_READ);
                vk::ImageMemoryBarrier::default()
                    .src_access_mask(src_access)
                    .dst_access_mask(dst_access)
                    .old_layout(vk::ImageLayout::GENERAL)
                    .new_layout(vk::ImageLayout::GENERAL)
                    .src_queue_family_index(src)
                    .dst_queue_family_index(dst)
                    .image(image)
                    .subresource_range(COLOR)
            })
            .collect();
        let (src_stage, dst_stage) = if acquire {
            (
                vk::PipelineStageFlags::TOP_OF_PIPE,
                vk::PipelineStageFlags::COMPUTE_SHADER,
            )
        } else {
            (
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::PipelineStageFlags::BOTTOM_OF_PIPE,
            )
        };
        // SAFETY: recorded between begin and end; the buffers and images live as long as the
        // job.
        unsafe {
            device.device.cmd_pipeline_barrier(
                self.cmd,
                src_stage,
                dst_stage,
                vk::DependencyFlags::empty(),
                &[],
                &buffers,
                &images,
            )
        };
    }
}
