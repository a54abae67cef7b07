//! Camera to display, in one process, with no pixel copies: a V4L2 camera's buffers (exported as
//! dma-bufs, or our dma-bufs the camera writes into) are scanned out by KMS as they are.
//!
//! ```text
//! cargo run --release --features v4l2 --example camera_to_display -- \
//!     [--camera /dev/videoN] [--display kms-spec] [--frames N] [--fps N] [--verify]
//! ```
//! `--display` takes what `--sink kms:…` takes (`vkms`, `/dev/dri/card1`, `connector=HDMI-A-1`);
//! `--verify` captures every frame through the writeback connector (vkms) and compares it with
//! the camera's buffer. In the VM: `ci/vm-run target/release/examples/camera_to_display --verify`.
//!
//! The format is one both ends take: the first the camera offers that the display's primary
//! plane scans out. Where there is none (a YUYV-only camera on a plane without YUV), the example
//! says so; converting on the GPU (Vulkan YUYV/NV12 → XR24) is the two-process pipeline's job.

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
fn run() -> anyhow::Result<()> {
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context};
    use frameshare::format::Fourcc;
    use frameshare::sink::kms::{KmsOptions, KmsSink};
    use frameshare::source::v4l2::{self, Mode, V4l2Config, V4l2Source};

    let mut camera: Option<std::path::PathBuf> = None;
    let mut display = String::new();
    let mut frames = 300u64;
    let mut verify = false;
    let mut fps: Option<f64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--camera" => camera = Some(args.next().context("--camera PATH")?.into()),
            "--display" => display = args.next().context("--display SPEC")?,
            "--frames" => frames = args.next().context("--frames N")?.parse()?,
            "--verify" => verify = true,
            "--fps" => fps = Some(args.next().context("--fps N")?.parse()?),
            "-h" | "--help" => {
                println!("camera_to_display [--camera /dev/videoN] [--display kms-spec] [--frames N] [--fps N] [--verify]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}"),
        }
    }

    let mut opts = KmsOptions::parse(&display)?;
    opts.verify_writeback |= verify;
    let mut kms = KmsSink::open(opts)?;

    // The camera: the one named, else the first capture device; its formats as frameshare
    // names them.
    let cams = v4l2::devices();
    let cam = match &camera {
        Some(p) => cams
            .iter()
            .find(|c| std::path::Path::new(&c.path) == p)
            .with_context(|| format!("{} is not a video capture device", p.display()))?,
        None => cams.first().context("no video capture device")?,
    };
    let offered: Vec<Fourcc> = cam
        .formats
        .iter()
        .filter_map(|(_, drm, _)| drm.as_deref()?.parse().ok())
        .collect();
    let scans: Vec<Fourcc> = kms.formats().iter().map(|f| f.fourcc).collect();
    let Some(fourcc) = offered.iter().copied().find(|f| scans.contains(f)) else {
        bail!(
            "no format in common: the camera {} offers {:?}, the plane of {} scans out {:?}; \
             a Vulkan YUYV/NV12 → XR24 conversion is needed (the two-process pipeline's job)",
            cam.path,
            offered.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            kms.device().display(),
            scans.iter().map(|f| f.to_string()).collect::<Vec<_>>()
        );
    };

    let mut src = V4l2Source::open(&V4l2Config {
        device: Some(cam.path.clone().into()),
        fourcc: Some(fourcc),
        size: None,
        fps,
        mode: Mode::Auto,
    })?;
    // Import needs an allocator; export (tried first) does not.
    let (mut alloc, _) = frameshare::alloc::open("auto")?;
    let prepared = src.prepare(Mode::Auto, 4, Some(alloc.as_mut()))?;
    if prepared.mode == Mode::Copy {
        bail!(
            "the camera can neither export nor import dma-bufs: {}",
            prepared.note
        );
    }
    for (i, b) in prepared.buffers.iter().enumerate() {
        kms.import(i as u32, b)?;
    }
    println!(
        "{} ({}) {} {}x{} → {} ({}), {} mode",
        cam.path,
        src.driver(),
        fourcc,
        src.layout().width,
        src.layout().height,
        kms.device().display(),
        kms.connector_name(),
        prepared.mode.name()
    );

    src.start()?;
    let start = Instant::now();
    for _ in 0..frames {
        let f = src.next_frame(Duration::from_secs(5))?;
        if f.corrupt {
            src.requeue(f.index)?;
            continue;
        }
        let p = kms.present(f.index, f.sequence, None)?;
        if let Some(r) = p.released {
            // The camera takes no fences: wait until the display let go, then give it back.
            if let Some(fence) = r.fence {
                fence.wait(Duration::from_secs(3))?;
            }
            src.requeue(r.id)?;
        }
    }
    for r in kms.release_all()? {
        src.requeue(r.id)?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let st = kms.stats();
    println!(
        "{} frames in {elapsed:.2} s ({:.1} fps), {} flips, {}, bytes copied {}",
        st.commits,
        st.commits as f64 / elapsed,
        st.flips,
        if verify {
            format!("verified by writeback {}/{}", st.verified, st.commits)
        } else {
            "writeback off".into()
        },
        src.bytes_copied()
    );
    if verify && st.mismatches > 0 {
        bail!("{} frames differed on screen", st.mismatches);
    }
    Ok(())
}
