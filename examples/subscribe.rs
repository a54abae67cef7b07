//! Subscribes to the stream `demo` and checks every frame's pixels against the generator's,
//! reading them in place (no copy). `cargo run --example subscribe`.
use frameshare::bus::{StreamName, Subscriber, SubscriberEvent, SubscriberOptions};
use frameshare::source::{Pattern, Scene};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut sub = Subscriber::connect(StreamName::new("demo")?, SubscriberOptions::default())?;
    let (mut scene, mut good, mut bad) = (None, 0, 0);
    loop {
        match sub.next(None)? {
            SubscriberEvent::BufferAdded { buffer, .. } => {
                scene = Some(Scene::new(Pattern::MovingBox, buffer.layout()))
            }
            SubscriberEvent::Frame(frame) => {
                let pixels = frame.read()?; // mapped once per buffer, read in place
                match scene.as_ref().map(|s| s.frame(frame.seq).verify(&pixels)) {
                    Some(Ok(())) => good += 1,
                    _ => bad += 1,
                }
            } // dropping the frame gives it back to the producer
            SubscriberEvent::Ended { reason, .. } => {
                break println!("{reason}: {good} frames verified, {bad} wrong")
            }
            _ => {}
        }
    }
    std::process::exit(if bad == 0 && good > 0 { 0 } else { 1 })
}
