//! The `log` driver: the carrier of the embedded default. Each delivery becomes one
//! JSON line in a file (or on stdout), so the service works end to end with no
//! carrier, and a developer can read what a phone would have received.
//!
//! The file stands in for the recipient's handset, so its lines carry the message
//! as delivered (code included); it is not an application log. A delivery counts
//! as sent once its line is written and flushed.
//!
//! For a voice OTP the driver first renders the prompt a call would play into
//! `delivery.voice_dir/<otp id>.wav` and puts that path in the line as `audio`.
//! When it cannot (espeak-ng is not installed, the render failed) the line says
//! why in `audio_error` instead, and the delivery still counts as sent: the log
//! stands in for a handset, and a developer without espeak-ng still sees the code.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use otp_store::ClaimedJob;

use super::voice::{Prompter, write_prompt_wav};
use super::{DeliveryOutcome, Driver};

type Line = (String, oneshot::Sender<Result<(), String>>);

/// One line of the file: the fields in name order, as a JSON object's keys
/// are written; the voice fields only on a voice OTP. Serialized directly,
/// not through a `serde_json::Value` built first.
#[derive(Serialize)]
struct DeliveryLine<'a> {
    at: otp_store::Micros,
    attempt: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    audio: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audio_error: Option<String>,
    channel: &'a str,
    job_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    length_factor: Option<f64>,
    message: String,
    otp_id: i64,
    provider_message_id: &'a str,
    segments: u32,
    to: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    voice_input: Option<&'a str>,
}

/// Appends deliveries to a JSON-lines file; shared by both channels.
#[derive(Clone)]
pub struct LogDriver {
    lines: mpsc::Sender<Line>,
    /// Renders voice prompts into this folder, when set.
    voice: Option<(Arc<Prompter>, PathBuf)>,
}

impl LogDriver {
    /// Opens (appending) the file, or stdout for `-`, and starts its writer task.
    pub async fn open(path: &str) -> std::io::Result<LogDriver> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = if path == "-" {
            Box::new(tokio::io::stdout())
        } else {
            let path = PathBuf::from(path);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir).await?;
            }
            Box::new(open_private(&path).await?)
        };
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(write_lines(out, rx));
        Ok(LogDriver {
            lines: tx,
            voice: None,
        })
    }

    /// Also writes each voice OTP's rendered prompt into `dir`.
    pub fn with_voice_audio(mut self, prompter: Arc<Prompter>, dir: impl Into<PathBuf>) -> Self {
        self.voice = Some((prompter, dir.into()));
        self
    }
}

/// Opens `path` for appending. A new file is made readable and writable by its
/// owner only (0600, whatever the umask): every line holds a code. An existing
/// file keeps its mode, which its operator chose; a warning says when group or
/// others can read it.
#[cfg(unix)]
async fn open_private(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
    use std::os::unix::fs::PermissionsExt;
    let created = tokio::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await;
    match created {
        Ok(file) => {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .await?;
            Ok(file)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let file = tokio::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .await?;
            let mode = file.metadata().await?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:o}"),
                    "the delivery log holds codes and can be read by other users; `chmod 600` it"
                );
            }
            Ok(file)
        }
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
async fn open_private(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

/// Writes whatever lines are waiting, flushes once, then acknowledges them all.
async fn write_lines(out: Box<dyn AsyncWrite + Send + Unpin>, mut rx: mpsc::Receiver<Line>) {
    let mut out = tokio::io::BufWriter::new(out);
    let mut acks = Vec::new();
    while let Some((line, ack)) = rx.recv().await {
        let mut result = out.write_all(line.as_bytes()).await;
        acks.push(ack);
        while result.is_ok() {
            match rx.try_recv() {
                Ok((line, ack)) => {
                    result = out.write_all(line.as_bytes()).await;
                    acks.push(ack);
                }
                Err(_) => break,
            }
        }
        let result = match result {
            Ok(()) => out.flush().await,
            Err(e) => Err(e),
        };
        let result = result.map_err(|e| format!("writing the delivery log failed: {e}"));
        for ack in acks.drain(..) {
            let _ = ack.send(result.clone());
        }
    }
}

#[async_trait::async_trait]
impl Driver for LogDriver {
    fn name(&self) -> &'static str {
        "log"
    }

    fn capacity(&self) -> usize {
        1024
    }

    async fn deliver(&self, job: &ClaimedJob) -> DeliveryOutcome {
        let otp = &job.otp;
        let provider_message_id = format!("log-{}", otp.id);
        let mut line = DeliveryLine {
            at: otp_store::now_micros(),
            attempt: job.attempts,
            audio: None,
            audio_error: None,
            channel: otp.channel.as_str(),
            job_id: job.job_id,
            length_factor: None,
            message: otp.message(),
            otp_id: otp.id,
            provider_message_id: &provider_message_id,
            segments: otp.segments,
            to: otp.number.as_str(),
            voice_input: None,
        };
        if let Some(v) = otp.voice {
            line.voice_input = Some(v.as_str());
            line.length_factor = Some(otp.length_factor.unwrap_or(1.0));
            if let Some((prompter, dir)) = &self.voice {
                match write_prompt_wav(prompter, dir, otp).await {
                    Ok(path) => line.audio = Some(path.display().to_string()),
                    Err(error) => line.audio_error = Some(error),
                }
            }
        }
        let mut text = match serde_json::to_string(&line) {
            Ok(text) => text,
            Err(e) => {
                return DeliveryOutcome::Retry {
                    error: format!("the delivery line could not be written: {e}"),
                };
            }
        };
        text.push('\n');
        let (ack, done) = oneshot::channel();
        if self.lines.send((text, ack)).await.is_err() {
            return DeliveryOutcome::Retry {
                error: "the delivery log writer has stopped".into(),
            };
        }
        match done.await {
            Ok(Ok(())) => DeliveryOutcome::Sent {
                provider_message_id: Some(provider_message_id),
            },
            Ok(Err(error)) => DeliveryOutcome::Retry { error },
            Err(_) => DeliveryOutcome::Retry {
                error: "the delivery log writer has stopped".into(),
            },
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::open_private;

    fn mode_of(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn a_new_delivery_log_is_private_to_its_owner_and_an_old_one_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.jsonl");
        drop(open_private(&new).await.unwrap());
        assert_eq!(mode_of(&new), 0o600);

        let old = dir.path().join("old.jsonl");
        std::fs::write(&old, "{}\n").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o640)).unwrap();
        use tokio::io::AsyncWriteExt;
        let mut file = open_private(&old).await.unwrap();
        file.write_all(b"{}\n").await.unwrap();
        file.flush().await.unwrap();
        assert_eq!(mode_of(&old), 0o640);
        assert_eq!(
            std::fs::read_to_string(&old).unwrap(),
            "{}\n{}\n",
            "appended"
        );
    }
}
