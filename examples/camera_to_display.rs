//! Camera to display, in one process, with no pixel copies: a V4L2 camera's buffers (exported as
//! dma-bufs, or our dma-bufs the camera writes into) are scanned out by KMS as they are, or,
//! where the plane cannot scan the camera's format out (YUYV, NV12), converted by a Vulkan
//! compute shader straight into XR24 display buffers first.
//!
//! ```text
//! cargo run --release --features v4l2 --example camera_to_display -- \
//!     [--camera /dev/videoN] [--display kms-spec] [--format FOURCC] [--frames N] [--fps N] [--verify]
//! ```
//! `--display` takes what `--sink kms:…` takes (`vkms`, `/dev/dri/card1`, `connector=HDMI-A-1`);
//! (`…:convert` always converts, `…:direct` never); `--verify` captures every frame through the
//! writeback connector (vkms) and compares it with the buffer on screen (and each conversion
//! with the CPU's). In the VM:
//! `ci/vm-run target/release/examples/camera_to_display --verify [--format YUYV]`.
//!
//! The format is negotiated as in the two-process pipeline: one the plane scans out if the
//! camera offers it, else one the conversion reads; `--format` asks for one.

#[cfg(not(feature = "v4l2"))]
fn main() {
    eprintln!("camera_to_display needs the v4l2 feature: cargo run --features v4l2 --example camera_to_display");
    std::process::exit(2);
}

#[cfg(feature = "v4l2")]
fn main() {
    if let Err(e) = run() {
        eprintln!("camera_to_display: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(feature = "v4l2")]
fn run() -> Result<(), Box<dyn std::error::Error>> {
    use std::time::{Duration, Instant};

    use frameshare::format::Fourcc;
    use frameshare::meta::FrameMeta;
    use frameshare::sink::kms::{KmsOptions, KmsSink};
    use frameshare::sink::{FrameIn, Sink};
    use frameshare::source::camera::negotiate_format;
    use frameshare::source::v4l2::{self, Mode, V4l2Config, V4l2Source};

    let mut camera: Option<std::path::PathBuf> = None;
    let mut display = String::new();
    let mut frames = 300u64;
    let mut verify = false;
    let mut fps: Option<f64> = None;
    let mut format: Option<Fourcc> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--camera" => camera = Some(args.next().ok_or("--camera PATH")?.into()),
            "--display" => display = args.next().ok_or("--display SPEC")?,
            "--frames" => frames = args.next().ok_or("--frames N")?.parse()?,
            "--verify" => verify = true,
            "--fps" => fps = Some(args.next().ok_or("--fps N")?.parse()?),
            "--format" => format = Some(args.next().ok_or("--format FOURCC")?.parse()?),
            "-h" | "--help" => {
                println!("camera_to_display [--camera /dev/videoN] [--display kms-spec] [--format FOURCC] [--frames N] [--fps N] [--verify]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }

    let mut opts: KmsOptions = display.parse()?;
    opts.verify_writeback |= verify;
    let mut sink = KmsSink::open(&opts)?;

    // The camera: the one named, else the first capture device; its formats as frameshare
    // names them.
    let cams = v4l2::devices();
    let cam = match &camera {
        Some(p) => cams
            .iter()
            .find(|c| std::path::Path::new(&c.path) == p)
            .ok_or_else(|| format!("{} is not a video capture device", p.display()))?,
        None => cams.first().ok_or("no video capture device")?,
    };
    let offered: Vec<Fourcc> = cam
        .formats
        .iter()
        .filter_map(|(_, drm, _)| drm.as_deref()?.parse().ok())
        .collect();
    // What the plane scans out first, then what the Vulkan conversion reads: the same
    // negotiation the two-process pipeline does.
    let caps = sink.caps();
    let fourcc = negotiate_format(&cam.path, &offered, format, &sink.name(), &caps.formats)?
        .ok_or("the display listed no formats")?;

    let mut src = V4l2Source::open(&V4l2Config {
        device: Some(cam.path.clone().into()),
        fourcc: Some(fourcc),
        size: None,
        fps,
        mode: Mode::Auto,
        separate_planes: false,
    })?;
    // Import needs an allocator; export (tried first) does not.
    let (mut alloc, _) = frameshare::alloc::open("auto")?;
    let prepared = src.prepare(Mode::Auto, 4, Some(alloc.as_mut()))?;
    if prepared.mode == Mode::Copy {
        return Err(format!(
            "the camera can neither export nor import dma-bufs: {}",
            prepared.note
        )
        .into());
    }
    for (i, b) in prepared.buffers.iter().enumerate() {
        sink.add_buffer(i as u32, b)?;
    }
    println!(
        "{} ({}) {} {}x{} → {} ({}), {} mode",
        cam.path,
        src.driver(),
        fourcc,
        src.layout().width(),
        src.layout().height(),
        sink.display().device().display(),
        sink.display().connector_name(),
        prepared.mode.name()
    );

    src.start()?;
    let start = Instant::now();
    let (mut shown, mut verified) = (0u64, 0u64);
    for _ in 0..frames {
        let f = src.next_frame(Duration::from_secs(5))?;
        if f.corrupt {
            src.requeue(f.index)?;
            continue;
        }
        let out = sink.frame(FrameIn {
            id: f.index,
            seq: f.sequence,
            buffer: &prepared.buffers[f.index as usize],
            acquire: None,
            meta: &FrameMeta::default(),
        })?;
        shown += 1;
        verified += out.verified as u64;
        // A buffer goes back to the camera once it left the screen (the camera takes no
        // fences: wait for the display's release fence here).
        for r in sink.take_released() {
            if let Some(fence) = r.release {
                fence.wait(Duration::from_secs(3))?;
            }
            src.requeue(r.id)?;
        }
    }
    sink.finish()?;
    for r in sink.take_released() {
        src.requeue(r.id)?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{shown} frames in {elapsed:.2} s ({:.1} fps), {} flips, {} converted on the GPU, {}, \
         bytes copied {}",
        shown as f64 / elapsed,
        sink.display().stats().flips,
        sink.frames_converted(),
        if opts.verify_writeback {
            format!("verified {verified}/{shown}")
        } else {
            "writeback off".into()
        },
        src.bytes_copied() + sink.bytes_copied()
    );
    if opts.verify_writeback && verified < shown {
        return Err(format!("{} frames were not verified on screen", shown - verified).into());
    }
    Ok(())
}
