//! The host's policy (`[policy]` in the agent config): what a sweep may make this agent
//! run. A sweep is written by whoever can reach the controller; the agent owns its host
//! and is the last line of defence, so every point is checked here before anything starts
//! for it (no GPU taken, no engine stopped or started, no URL fetched). A point that breaks
//! the policy fails with a [`Violation`] naming the rule (`agent policy: image "evil/x:1"
//! is not in policy.images (allowed: …)`); other points keep running.
//!
//! The rules: which runtimes ([`Policy::runtimes`]); which Docker images, by name pattern
//! or pinned digest ([`Policy::images`]); whether a sweep may replace the image's
//! entrypoint ([`Policy::allow_entrypoint_override`], [`Policy::entrypoints`]); which vLLM
//! flags `extra_args` may carry, each value a plain word ([`Policy::extra_args`]); which
//! hosts an `external` engine may be at ([`Policy::external_hosts`]). And what a container
//! gets: the agent's `engine_env` (secrets) and the Hugging Face cache only when it runs an
//! allowed image with a trusted entrypoint ([`Policy::trusts_container`]), the cache
//! read-only unless [`Policy::hf_cache_writable`], `--ipc=host` only with
//! [`Policy::ipc_host`].
//!
//! [`scrub`]: `engine_env` values are replaced by `[redacted:NAME]` in everything that
//! leaves the host (log tails, errors, events, records).

pub mod scrub;

use std::fmt;
use std::net::IpAddr;

use fleetbench_proto::pb;
use fleetbench_proto::spec::Runtime;
use serde::Deserialize;

/// `[policy]`: what sweeps may make this agent run. Lists replace their defaults (repeat
/// the defaults you want to keep).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Runtimes a sweep may use; default all three (`process` runs the agent's own
    /// `vllm_command`, `docker` only [`Policy::images`], `external` only
    /// [`Policy::external_hosts`]).
    pub runtimes: Vec<Runtime>,
    /// Docker images a sweep may run: name patterns (`vllm/vllm-openai:*`, `*` matches any
    /// run of characters, a pattern without a tag means `:latest`) and/or pinned digests
    /// (`vllm/vllm-openai@sha256:…`, which a sweep must then name by that digest). A
    /// `repo:*` pattern also admits `repo@sha256:…`. `docker.io/` and `library/` are
    /// implied, as Docker does. Default: the official vLLM images and the simulator.
    pub images: Vec<String>,
    /// Whether a sweep may set an `entrypoint` not in [`Policy::entrypoints`]. Such a
    /// container never gets `engine_env` or the Hugging Face cache. Default false.
    pub allow_entrypoint_override: bool,
    /// Entrypoints a sweep may always set (exact argument lists), trusted like the image's
    /// own: vLLM's server started the documented ways.
    pub entrypoints: Vec<Vec<String>>,
    /// vLLM flags `extra_args` may carry (`--max-num-seqs`; `*` globs, e.g. `--sim-*`).
    /// Each flag takes at most one value (`--flag value` or `--flag=value`), a plain word:
    /// letters, digits and `. _ - + : / , @`, never another flag or shell text. Default: a
    /// list of harmless vLLM tuning flags and the simulator's `--sim-*`.
    pub extra_args: Vec<String>,
    /// Hosts an `external` engine's URL may name (names, IPv4 or IPv6 addresses; `*`
    /// globs). Default loopback only: `127.0.0.1`, `::1`, `localhost`.
    pub external_hosts: Vec<String>,
    /// Mount the host's Hugging Face cache writable (engines can download weights into
    /// it). Default false: read-only, weights are downloaded ahead of time.
    pub hf_cache_writable: bool,
    /// Run containers with `--ipc=host` (vLLM's advice for tensor parallelism). Default
    /// false: a private IPC namespace with `[docker] shm_size_gib` of `/dev/shm`.
    pub ipc_host: bool,
}

/// Images admitted by default: the official vLLM images and fleetbench's simulator.
pub const DEFAULT_IMAGES: &[&str] = &[
    "vllm/vllm-openai:*",
    "intel/vllm:*",
    "rocm/vllm:*",
    "fleetbench/vllm-sim:*",
];

/// vLLM flags admitted in `extra_args` by default: scheduling, memory, precision and
/// logging knobs that change how fast an engine runs, not what it loads, where it listens
/// or which code it executes (no `--trust-remote-code`, paths, URLs, plugins or JSON).
pub const DEFAULT_EXTRA_ARGS: &[&str] = &[
    "--max-num-seqs",
    "--max-num-batched-tokens",
    "--max-model-len",
    "--block-size",
    "--gpu-memory-utilization",
    "--swap-space",
    "--cpu-offload-gb",
    "--kv-cache-dtype",
    "--dtype",
    "--quantization",
    "--load-format",
    "--seed",
    "--enforce-eager",
    "--no-enforce-eager",
    "--max-seq-len-to-capture",
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
    "--enable-chunked-prefill",
    "--no-enable-chunked-prefill",
    "--max-num-partial-prefills",
    "--max-long-partial-prefills",
    "--long-prefill-token-threshold",
    "--scheduling-policy",
    "--async-scheduling",
    "--disable-cascade-attn",
    "--disable-custom-all-reduce",
    "--disable-log-stats",
    "--disable-log-requests",
    "--enable-log-requests",
    "--no-enable-log-requests",
    "--max-logprobs",
    "--tokenizer-mode",
    "--uvicorn-log-level",
    "--sim-*",
];

/// Hosts an `external` engine may be at by default: this host's loopback.
pub const DEFAULT_EXTERNAL_HOSTS: &[&str] = &["127.0.0.1", "::1", "localhost"];

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            runtimes: vec![Runtime::Process, Runtime::Docker, Runtime::External],
            images: strings(DEFAULT_IMAGES),
            allow_entrypoint_override: false,
            entrypoints: vec![
                strings(&["vllm", "serve"]),
                strings(&["python3", "-m", "vllm.entrypoints.openai.api_server"]),
                strings(&["python", "-m", "vllm.entrypoints.openai.api_server"]),
            ],
            extra_args: strings(DEFAULT_EXTRA_ARGS),
            external_hosts: strings(DEFAULT_EXTERNAL_HOSTS),
            hf_cache_writable: false,
            ipc_host: false,
        }
    }
}

/// A point that breaks the host's policy: the rule (`policy.images`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The config key of the rule, e.g. `policy.images`.
    pub rule: &'static str,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "agent policy: {}", self.message)
    }
}

impl std::error::Error for Violation {}

/// Longest piece of sweep-supplied text quoted in a violation.
const QUOTE_MAX: usize = 120;

/// `s` quoted for a message, cut at [`QUOTE_MAX`] characters.
fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(QUOTE_MAX).collect();
        format!("{cut:?}…")
    }
}

fn quote_list(items: &[String]) -> String {
    let shown: Vec<String> = items.iter().take(8).map(|s| quote(s)).collect();
    let more = if items.len() > 8 { ", …" } else { "" };
    format!("[{}{more}]", shown.join(", "))
}

fn allowed_list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

impl Policy {
    /// Checks that what the config says can be enforced (patterns not empty, flags that
    /// look like flags). Returns the offending key and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if let Some(i) = self.images.iter().position(|p| p.trim().is_empty()) {
            return Err((format!("policy.images[{i}]"), "must not be empty".into()));
        }
        if let Some((i, p)) = self
            .images
            .iter()
            .enumerate()
            .find(|(_, p)| p.contains('@') && !p.contains("@sha256:"))
        {
            return Err((
                format!("policy.images[{i}]"),
                format!("{p:?}: a pinned image is name@sha256:<digest>"),
            ));
        }
        if let Some((i, f)) = self
            .extra_args
            .iter()
            .enumerate()
            .find(|(_, f)| !f.starts_with('-') && f.as_str() != "*")
        {
            return Err((
                format!("policy.extra_args[{i}]"),
                format!("{f:?} is not a flag (flags start with -)"),
            ));
        }
        if let Some(i) = self.entrypoints.iter().position(Vec::is_empty) {
            return Err((
                format!("policy.entrypoints[{i}]"),
                "must not be empty (the image's own entrypoint is always allowed)".into(),
            ));
        }
        if let Some(i) = self.external_hosts.iter().position(|h| h.trim().is_empty()) {
            return Err((
                format!("policy.external_hosts[{i}]"),
                "must not be empty".into(),
            ));
        }
        Ok(())
    }

    /// Checks a point's engine against every rule; the first rule it breaks is the error.
    pub fn check(&self, spec: &pb::EngineSpec) -> Result<(), Violation> {
        let runtime = Runtime::try_from(spec.runtime_kind()).map_err(|_| Violation {
            rule: "policy.runtimes",
            message: format!("runtime {} is not known to this agent", spec.runtime_kind),
        })?;
        if !self.runtimes.contains(&runtime) {
            let allowed: Vec<String> = self.runtimes.iter().map(|r| r.as_str().into()).collect();
            return Err(Violation {
                rule: "policy.runtimes",
                message: format!(
                    "runtime {:?} is not in policy.runtimes (allowed: {})",
                    runtime.as_str(),
                    allowed_list(&allowed)
                ),
            });
        }
        match runtime {
            Runtime::Docker => {
                self.check_image(&spec.image)?;
                self.check_entrypoint(&spec.entrypoint)?;
            }
            Runtime::External => self.check_external_url(&spec.external_url)?,
            Runtime::Process => {}
        }
        self.check_extra_args(&spec.extra_args)
    }

    /// `policy.images`: the image matches a name pattern or a pinned digest.
    pub fn check_image(&self, image: &str) -> Result<(), Violation> {
        if self.images.iter().any(|p| image_matches(p, image)) {
            return Ok(());
        }
        Err(Violation {
            rule: "policy.images",
            message: format!(
                "image {} is not in policy.images (allowed: {})",
                quote(image),
                allowed_list(&self.images)
            ),
        })
    }

    /// Whether `entrypoint` is the image's own (empty) or one of [`Policy::entrypoints`].
    pub fn trusts_entrypoint(&self, entrypoint: &[String]) -> bool {
        entrypoint.is_empty() || self.entrypoints.iter().any(|e| e == entrypoint)
    }

    /// `policy.allow_entrypoint_override`: a sweep's entrypoint is a trusted one or the
    /// policy allows overrides.
    pub fn check_entrypoint(&self, entrypoint: &[String]) -> Result<(), Violation> {
        if self.allow_entrypoint_override || self.trusts_entrypoint(entrypoint) {
            return Ok(());
        }
        let trusted: Vec<String> = self.entrypoints.iter().map(|e| quote_list(e)).collect();
        Err(Violation {
            rule: "policy.allow_entrypoint_override",
            message: format!(
                "entrypoint {} replaces the image's and policy.allow_entrypoint_override is false (entrypoints allowed by policy.entrypoints: {})",
                quote_list(entrypoint),
                allowed_list(&trusted)
            ),
        })
    }

    /// Whether a container of `spec` may see the agent's `engine_env` and the Hugging Face
    /// cache: its image is allowed and its entrypoint is the image's own or a trusted one
    /// (an override admitted only by `allow_entrypoint_override` runs code the sweep
    /// chose, so it gets neither).
    pub fn trusts_container(&self, spec: &pb::EngineSpec) -> bool {
        self.check_image(&spec.image).is_ok() && self.trusts_entrypoint(&spec.entrypoint)
    }

    /// `policy.extra_args`: every flag is allowed and every value is a plain word that
    /// follows a flag.
    pub fn check_extra_args(&self, args: &[String]) -> Result<(), Violation> {
        // The flag the next bare word is the value of.
        let mut open_flag: Option<&str> = None;
        for arg in args {
            if arg.starts_with('-') && !is_number(arg) {
                let (name, inline) = match arg.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (arg.as_str(), None),
                };
                if !is_flag_name(name) {
                    return Err(Violation {
                        rule: "policy.extra_args",
                        message: format!(
                            "extra_args flag {} is not a flag name (letters, digits, - _ .)",
                            quote(name)
                        ),
                    });
                }
                if !self.extra_args.iter().any(|p| glob_match(p, name)) {
                    return Err(Violation {
                        rule: "policy.extra_args",
                        message: format!(
                            "extra_args flag {} is not in policy.extra_args (allowed: {})",
                            quote(name),
                            allowed_list(&self.extra_args)
                        ),
                    });
                }
                match inline {
                    Some(value) => {
                        check_value(name, value)?;
                        open_flag = None;
                    }
                    None => open_flag = Some(name),
                }
            } else {
                match open_flag.take() {
                    Some(flag) => check_value(flag, arg)?,
                    None => {
                        return Err(Violation {
                            rule: "policy.extra_args",
                            message: format!(
                                "extra_args value {} does not follow a flag (policy.extra_args allows one value per flag)",
                                quote(arg)
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// `policy.external_hosts`: an `external` engine's URL is http(s) on an allowed host.
    pub fn check_external_url(&self, url: &str) -> Result<(), Violation> {
        let refuse = |why: String| Violation {
            rule: "policy.external_hosts",
            message: why,
        };
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| refuse(format!("external url {} is not a URL: {e}", quote(url))))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(refuse(format!(
                "external url {} is not http or https",
                quote(url)
            )));
        }
        let Some(host) = parsed.host_str().map(normal_host) else {
            return Err(refuse(format!("external url {} has no host", quote(url))));
        };
        if self
            .external_hosts
            .iter()
            .any(|h| glob_match(&normal_host(h), &host))
        {
            return Ok(());
        }
        Err(refuse(format!(
            "external url host {} is not in policy.external_hosts (allowed: {})",
            quote(&host),
            allowed_list(&self.external_hosts)
        )))
    }
}

/// Characters a flag value may hold besides ASCII letters and digits.
const VALUE_PUNCTUATION: &str = "._-+:/,@";

/// Longest flag value accepted.
const VALUE_MAX: usize = 256;

/// A flag's value is one plain word: not empty, not another flag, no shell text.
fn check_value(flag: &str, value: &str) -> Result<(), Violation> {
    let refuse = |why: &str| Violation {
        rule: "policy.extra_args",
        message: format!(
            "extra_args value {} of {flag} {why} (values are plain words: letters, digits and {VALUE_PUNCTUATION})",
            quote(value)
        ),
    };
    if value.is_empty() {
        return Err(refuse("is empty"));
    }
    if value.len() > VALUE_MAX {
        return Err(refuse("is too long"));
    }
    if value.starts_with('-') && !is_number(value) {
        return Err(refuse("looks like a flag"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || VALUE_PUNCTUATION.contains(c))
    {
        return Err(refuse("is not a plain value"));
    }
    Ok(())
}

/// `--max-num-seqs`, `-O`: dashes, then letters, digits, `-`, `_` and `.`.
fn is_flag_name(name: &str) -> bool {
    let body = name.trim_start_matches('-');
    let dashes = name.len() - body.len();
    (1..=2).contains(&dashes)
        && body.starts_with(|c: char| c.is_ascii_alphanumeric())
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `-1`, `-0.5`: a negative number is a value, not a flag.
fn is_number(s: &str) -> bool {
    s.len() > 1
        && s[1..]
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == 'e' || c == '-')
        && s.parse::<f64>().is_ok()
}

/// `pattern` matches all of `text`, `*` standing for any run of characters (`/` and `:`
/// included); everything else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` take one more character.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

/// A Docker image reference: repository (Docker Hub's implied `docker.io/` and
/// `library/` removed), tag and digest.
#[derive(Debug, PartialEq)]
struct ImageRef<'a> {
    repo: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

fn parse_image(image: &str) -> ImageRef<'_> {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    // The tag follows the last `:` after the last `/` (`host:5000/x` has a port, not a tag).
    let name_start = rest.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match rest[name_start..].rfind(':') {
        Some(i) => (&rest[..name_start + i], Some(&rest[name_start + i + 1..])),
        None => (rest, None),
    };
    let repo = ["docker.io/", "index.docker.io/", "registry-1.docker.io/"]
        .iter()
        .find_map(|p| repo.strip_prefix(p))
        .unwrap_or(repo);
    let repo = repo.strip_prefix("library/").unwrap_or(repo);
    ImageRef { repo, tag, digest }
}

/// Whether `image` (a sweep's) is admitted by `pattern` (a [`Policy::images`] entry).
pub fn image_matches(pattern: &str, image: &str) -> bool {
    if image.trim().is_empty() {
        return false;
    }
    if pattern == "*" {
        return true;
    }
    let (p, i) = (parse_image(pattern), parse_image(image));
    if !glob_match(p.repo, i.repo) {
        return false;
    }
    if let Some(pinned) = p.digest {
        return i.digest == Some(pinned);
    }
    let tags = p.tag.unwrap_or("latest");
    match (i.tag, i.digest) {
        (Some(tag), _) => glob_match(tags, tag),
        // By digest only: any version of an admitted repository.
        (None, Some(_)) => tags == "*",
        (None, None) => glob_match(tags, "latest"),
    }
}

/// A host as compared: lowercase, no brackets or trailing dot, IP addresses canonical
/// (`0:0:0:0:0:0:0:1` is `::1`).
fn normal_host(host: &str) -> String {
    let h = host.trim().trim_end_matches('.');
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    match h.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => h.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests;
