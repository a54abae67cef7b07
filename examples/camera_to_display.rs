//! Camera to display, in one process, with no pixel copies: a V4L2 camera's buffers (exported as
//! dma-bufs, or our dma-bufs the camera writes into) are scanned out by KMS as they are, or,
//! where the plane cannot scan the camera's format out (YUYV, NV12), converted by a Vulkan
//! compute shader straight into XR24 display buffers first. The library's pipeline does the
//! work: the camera (`CameraSource`) publishes in one thread, the display sink subscribes
//! in another, over a socketpair — the same code as `frameshare produce`/`consume`.
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
    use frameshare::bus::{Channel, Publisher, PublisherOptions, Subscriber, SubscriberOptions};
    use frameshare::format::Fourcc;
    use frameshare::pipeline::{self, ConsumeOptions, ProduceOptions};
    use frameshare::sink::display::DisplaySink;
    use frameshare::sink::kms::{KmsOptions, KmsSink};
    use frameshare::sink::Sink;
    use frameshare::source::camera::CameraSource;
    use frameshare::source::v4l2::{Mode, V4l2Config};
    use frameshare::source::Source;

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

    let mut opts = KmsOptions::parse(&display)?;
    opts.verify_writeback |= verify;
    let mut sink = DisplaySink::new(KmsSink::open(opts.clone())?, &opts);

    // The camera (the one named, else the first capture device) exports its own buffers as
    // dma-bufs, or fills ours (import needs an allocator; export, tried first, does not). Its
    // format is negotiated with the display when it starts: what the plane scans out first,
    // then what the Vulkan conversion reads.
    let mut source = CameraSource::new(
        V4l2Config {
            device: camera,
            fourcc: format,
            size: None,
            fps,
            mode: Mode::Auto,
            separate_planes: false,
        },
        "auto".parse()?,
        4,
    )
    .for_consumer(&sink.name());

    // One process, both ends of the bus: the camera publishes in a thread, the display
    // subscribes here; only buffer ids cross the socketpair, each buffer's fds once.
    let (ours, theirs) = Channel::pair()?;
    let producer = std::thread::spawn(move || {
        let mut publisher = Publisher::new(PublisherOptions {
            name: source.info().name,
            ..PublisherOptions::default()
        })?;
        publisher.add_connection(ours, true)?;
        let popts = ProduceOptions {
            frames: Some(frames),
            wait_for: 1,
            ..ProduceOptions::default()
        };
        pipeline::produce(publisher, &mut source, &popts)
    });
    let caps = sink.caps();
    let mut sub = Subscriber::from_channel(
        theirs,
        SubscriberOptions {
            name: sink.name(),
            fences: caps.fences,
            kinds: caps.kinds,
            formats: caps.formats,
            ..SubscriberOptions::default()
        },
    )?;
    let shown = pipeline::consume(&mut sub, &mut sink, &ConsumeOptions::default())?;
    let camera = producer
        .join()
        .map_err(|_| "the camera thread panicked")??;
    if let Some(e) = &shown.error {
        return Err(format!("display: {e}").into());
    }
    println!(
        "{} → {} ({})",
        camera.allocator_note,
        sink.kms().device().display(),
        sink.kms().connector_name()
    );
    let copied = camera.bytes_copied + shown.bytes_copied;
    if camera.bytes_copied > 0 {
        return Err(format!(
            "the camera can neither export nor import dma-bufs: {}",
            camera.allocator_note
        )
        .into());
    }
    // Corrupt frames (the camera's error flag) and frames whose fence timed out are not shown.
    let on_screen = shown.frames_delivered - shown.frames_dropped;
    let elapsed = camera.elapsed_s;
    println!(
        "{on_screen} frames in {elapsed:.2} s ({:.1} fps), {} flips, {} converted on the GPU, {}, \
         bytes copied {copied}",
        on_screen as f64 / elapsed,
        sink.kms().stats().flips,
        sink.frames_converted(),
        if opts.verify_writeback {
            format!("verified {}/{on_screen}", shown.frames_verified)
        } else {
            "writeback off".into()
        },
    );
    if opts.verify_writeback && shown.frames_verified < on_screen {
        return Err(format!(
            "{} frames were not verified on screen",
            on_screen - shown.frames_verified
        )
        .into());
    }
    Ok(())
}
