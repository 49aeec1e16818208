//! Submits N messages as fast as the window allows and prints the rate.
//!
//! ```text
//! node peers/smsc/smsc.js --port 2775 --quiet &
//! cargo run --release -p smpp --example throughput -- 127.0.0.1:2775 100000 50
//! ```
//! Arguments: address, message count (default 100000), window (default 50),
//! binds (default 1).

use std::time::Instant;

use bytes::Bytes;
use smpp::pdu::SubmitSm;
use smpp::{BindConfig, Client};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:2775".into());
    let count: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let window: usize = args.next().map_or(Ok(50), |a| a.parse())?;
    let binds: usize = args.next().map_or(Ok(1), |a| a.parse())?;

    let mut clients = Vec::new();
    for _ in 0..binds {
        let mut config = BindConfig::new("otpgate", "secret");
        config.window = window;
        let (client, inbound) = Client::connect(addr.as_str(), config).await?;
        // Receipts, if the SMSC sends them, are acknowledged by the session.
        tokio::spawn(async move {
            let mut inbound = inbound;
            while inbound.recv().await.is_some() {}
        });
        clients.push(client);
    }

    let started = Instant::now();
    let mut tasks = Vec::new();
    // One task per in-flight slot per bind keeps every window full.
    for (i, client) in clients.iter().enumerate() {
        for worker in 0..window {
            let client = client.clone();
            let share = (i * window + worker..count).step_by(binds * window).count();
            tasks.push(tokio::spawn(async move {
                let mut rejected = 0usize;
                for n in 0..share {
                    let text = Bytes::from(format!("Your code is {:06}", n % 1_000_000));
                    let sm = SubmitSm::new("OTPGATE", "9779841234567", 0, text);
                    if !client.submit(&sm).await?.is_ok() {
                        rejected += 1;
                    }
                }
                Ok::<_, smpp::Error>(rejected)
            }));
        }
    }
    let mut rejected = 0;
    for task in tasks {
        rejected += task.await??;
    }
    let elapsed = started.elapsed();
    println!(
        "{count} submit_sm in {:.2} s: {:.0}/s over {binds} bind(s), window {window}, {rejected} not accepted",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    for client in clients {
        client.unbind().await?;
    }
    Ok(())
}
