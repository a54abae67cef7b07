//! Publishes 300 generated frames as the stream `demo` to every subscriber, then ends it.
//! `cargo run --example publish` (then `cargo run --example subscribe`, any number of times).
use frameshare::bus::{Publisher, PublisherOptions, StreamName};
use frameshare::source::{Generator, Pattern};
use frameshare::{alloc::AllocatorSpec, format::Fourcc, FrameLayout};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let layout = FrameLayout::linear(Fourcc::XR24, 640, 480, 256)?;
    let mut alloc = "auto".parse::<AllocatorSpec>()?.open()?;
    let opts = PublisherOptions {
        pattern: Some("box".into()),
        ..Default::default()
    };
    let mut publisher = Publisher::bind(&StreamName::new("demo")?, opts)?;
    publisher.set_buffers(
        (0..4)
            .map(|_| alloc.allocate(&layout))
            .collect::<Result<_, _>>()?,
    )?;
    publisher.wait_for_consumers(1, None)?;
    let mut generator = Generator::new(Pattern::MovingBox, &layout);
    for seq in 0..300 {
        let Some(mut frame) = publisher.loan()? else {
            continue;
        }; // every buffer out: dropped
        generator.fill(frame.id(), &mut frame.write()?, seq);
        frame.publish(seq)?;
    }
    println!("published {} frames", publisher.finish()?.published);
    Ok(())
}
