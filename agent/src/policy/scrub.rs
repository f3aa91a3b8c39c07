//! [`Scrubber`]: the agent's `engine_env` values (HF_TOKEN, proxy credentials) never leave
//! the host. Every value of at least [`MIN_SECRET_LEN`] characters is replaced by
//! `[redacted:NAME]` in engine log lines as they are read ([`crate::engine::log_tail`]),
//! and in every message the agent sends ([`Scrubber::scrub_message`], applied by
//! [`crate::link::outbox::Outbox::push`] before a message is spooled or sent): engine
//! events (message, log tail, version), point errors and engine arguments, request
//! records' errors and metric names. An engine (or a sweep's entrypoint) that prints a
//! secret only ever shows the controller its name.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use fleetbench_proto::pb::{self, agent_message::Msg};

/// Shorter values are not redacted (they would blank out ordinary words and numbers).
pub const MIN_SECRET_LEN: usize = 4;

/// Replaces the agent's `engine_env` values in text. Cheap to clone.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// (value, `[redacted:NAME]`), longest value first so a secret that contains another
    /// is redacted whole.
    secrets: Arc<[(String, String)]>,
}

impl fmt::Debug for Scrubber {
    /// Names only: a scrubber must not print what it hides.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field(
                "redacts",
                &self
                    .secrets
                    .iter()
                    .map(|(_, r)| r.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Scrubber {
    /// A scrubber of `env`'s values (`engine_env`).
    pub fn new(env: &BTreeMap<String, String>) -> Self {
        let mut secrets: Vec<(String, String)> = env
            .iter()
            .filter(|(_, v)| v.chars().count() >= MIN_SECRET_LEN)
            .map(|(k, v)| (v.clone(), format!("[redacted:{k}]")))
            .collect();
        secrets.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Scrubber {
            secrets: secrets.into(),
        }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced, in one left-to-right pass (a replacement is never
    /// scanned again); borrowed when there is none.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.secrets.iter().any(|(v, _)| text.contains(v.as_str())) {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            match self
                .secrets
                .iter()
                .find(|(v, _)| rest.starts_with(v.as_str()))
            {
                Some((v, r)) => {
                    out.push_str(r);
                    rest = &rest[v.len()..];
                }
                None => {
                    out.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        Cow::Owned(out)
    }

    /// Scrubs `text` in place.
    pub fn scrub_string(&self, text: &mut String) {
        if let Cow::Owned(clean) = self.scrub(text) {
            *text = clean;
        }
    }

    pub fn scrub_strings(&self, texts: &mut [String]) {
        for t in texts {
            self.scrub_string(t);
        }
    }

    /// Scrubs every text of a message the agent sends that an engine, a container or the
    /// agent's own errors can fill: events, point results, request records.
    pub fn scrub_message(&self, msg: &mut pb::AgentMessage) {
        if self.is_empty() {
            return;
        }
        match &mut msg.msg {
            Some(Msg::EngineEvent(ev)) => {
                self.scrub_string(&mut ev.kind);
                self.scrub_string(&mut ev.message);
                self.scrub_strings(&mut ev.log_tail);
                self.scrub_string(&mut ev.engine_version);
                self.scrub_string(&mut ev.image);
                self.scrub_string(&mut ev.image_digest);
                self.scrub_string(&mut ev.container);
            }
            Some(Msg::PointFinished(pf)) => {
                self.scrub_string(&mut pf.error);
                self.scrub_string(&mut pf.endpoint);
                self.scrub_string(&mut pf.engine_version);
                self.scrub_strings(&mut pf.engine_args);
                self.scrub_strings(&mut pf.fallbacks);
                self.scrub_string(&mut pf.engine_image);
                self.scrub_string(&mut pf.engine_image_digest);
                for m in &mut pf.engine_metrics {
                    self.scrub_string(&mut m.name);
                }
            }
            Some(Msg::RecordBatch(batch)) => {
                for r in &mut batch.records {
                    self.scrub_string(&mut r.error);
                    self.scrub_string(&mut r.endpoint);
                }
            }
            // Registration and heartbeats carry the agent's own config and state.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber() -> Scrubber {
        Scrubber::new(&BTreeMap::from([
            ("HF_TOKEN".to_string(), "hf_SeCrEt123".to_string()),
            ("PROXY".to_string(), "http://u:pw@proxy:912".to_string()),
            ("SHORT".to_string(), "abc".to_string()),
            ("INNER".to_string(), "SeCrEt".to_string()),
        ]))
    }

    #[test]
    fn values_become_their_names() {
        let s = scrubber();
        assert_eq!(
            s.scrub("token=hf_SeCrEt123 via http://u:pw@proxy:912/x"),
            "token=[redacted:HF_TOKEN] via [redacted:PROXY]/x"
        );
        // The longest secret wins where one contains another; the shorter one alone is
        // redacted too.
        assert_eq!(
            s.scrub("SeCrEt and hf_SeCrEt123"),
            "[redacted:INNER] and [redacted:HF_TOKEN]"
        );
        // Values under 4 characters are left alone.
        assert_eq!(s.scrub("abc abc"), "abc abc");
        assert!(matches!(s.scrub("nothing here"), Cow::Borrowed(_)));
        // Multi-byte text around a secret survives.
        assert_eq!(s.scrub("é→SeCrEt←"), "é→[redacted:INNER]←");
    }

    #[test]
    fn debug_shows_names_not_values() {
        let shown = format!("{:?}", scrubber());
        assert!(shown.contains("[redacted:HF_TOKEN]"), "{shown}");
        assert!(!shown.contains("hf_SeCrEt123"), "{shown}");
    }

    #[test]
    fn messages_are_scrubbed_in_every_engine_filled_field() {
        let s = scrubber();
        let secret = "hf_SeCrEt123";
        let mut ev = pb::AgentMessage {
            msg: Some(Msg::EngineEvent(pb::EngineEvent {
                kind: "exited".into(),
                message: format!("died: {secret}"),
                log_tail: vec![format!("echo {secret}"), "ok".into()],
                engine_version: secret.into(),
                ..Default::default()
            })),
        };
        s.scrub_message(&mut ev);
        let mut pf = pb::AgentMessage {
            msg: Some(Msg::PointFinished(pb::PointFinished {
                error: format!("engine start failed: {secret}"),
                engine_args: vec!["--x".into(), secret.into()],
                fallbacks: vec![secret.into()],
                engine_version: secret.into(),
                engine_metrics: vec![pb::MetricSample {
                    name: secret.into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
        };
        s.scrub_message(&mut pf);
        let mut rb = pb::AgentMessage {
            msg: Some(Msg::RecordBatch(pb::RecordBatch {
                records: vec![pb::RequestRecord {
                    error: format!("HTTP 500: {secret}"),
                    ..Default::default()
                }],
                ..Default::default()
            })),
        };
        s.scrub_message(&mut rb);
        for m in [&ev, &pf, &rb] {
            let shown = format!("{m:?}");
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("[redacted:HF_TOKEN]"), "{shown}");
        }
    }
}
