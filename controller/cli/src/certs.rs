//! `controllerctl certs`: a development CA and the certificates of a controller, its agents
//! and operators, plus operator tokens — everything "Securing a fleet" in the README needs,
//! in one folder. Keys and tokens are written owner-only (0600). For production, bring
//! certificates from your own CA with the same SAN URIs.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::Args;
use fleetbench_controller::auth::{
    AGENT_URI_PREFIX, OPERATOR_URI_PREFIX, token_digest_hex, valid_name,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::CliError;

/// Arguments of `controllerctl certs`.
#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    /// Folder to write into (created owner-only if missing; existing files are not replaced).
    #[arg(long, default_value = "fleetbench-certs")]
    pub out: PathBuf,
    /// Names the controller is reached by (DNS names or IP addresses), comma-separated:
    /// its certificate is valid for these.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    pub controller_names: Vec<String>,
    /// Agent names, comma-separated: one certificate each.
    #[arg(long, value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Operators as NAME:ROLE (role admin or viewer), comma-separated: a certificate and a
    /// token each.
    #[arg(long, value_delimiter = ',')]
    pub operators: Vec<String>,
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
}

/// Writes the CA, the controller's, agents' and operators' certificates and keys, and the
/// operators' tokens with the controller's `tokens.toml`.
pub fn generate(args: &CertsArgs) -> Result<Written, CliError> {
    let mut operators = Vec::new();
    for op in &args.operators {
        let (name, role) = op.split_once(':').unwrap_or((op, "admin"));
        if !valid_name(name) || !matches!(role, "admin" | "viewer") {
            return Err(CliError::Usage(format!(
                "--operators {op:?}: NAME:ROLE with a plain name and role admin or viewer"
            )));
        }
        operators.push((name.to_owned(), role.to_owned()));
    }
    if let Some(bad) = args.agents.iter().find(|a| !valid_name(a)) {
        return Err(CliError::Usage(format!(
            "--agents {bad:?}: names are 1-64 characters of A-Z a-z 0-9 . _ -"
        )));
    }
    create_private_dir(&args.out)?;
    let mut out = Written::default();

    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fleetbench development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(cert_err)?)
        .map_err(cert_err)?;
    write(&args.out, "ca.pem", &ca.pem(), false, &mut out)?;
    write(
        &args.out,
        "ca-key.pem",
        &ca.key().serialize_pem(),
        true,
        &mut out,
    )?;

    let leaf = |cn: &str, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![usage];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = p.signed_by(&key, &ca).map_err(cert_err)?;
        Ok::<_, CliError>((cert.pem(), key.serialize_pem()))
    };

    let mut sans = Vec::new();
    for name in &args.controller_names {
        sans.push(match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.as_str().try_into().map_err(cert_err)?),
        });
    }
    // `<stem>.pem` and `<stem>-key.pem`, signed by the CA.
    let issue = |out: &mut Written, stem: &str, cn: &str, sans: Vec<SanType>, usage| {
        let (cert, key) = leaf(cn, sans, usage)?;
        write(&args.out, &format!("{stem}.pem"), &cert, false, out)?;
        write(&args.out, &format!("{stem}-key.pem"), &key, true, out)
    };
    issue(
        &mut out,
        "controller",
        "fleetbench controller",
        sans,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;

    for agent in &args.agents {
        let uri = format!("{AGENT_URI_PREFIX}{agent}");
        let san = SanType::URI(uri.as_str().try_into().map_err(cert_err)?);
        issue(
            &mut out,
            &format!("agent-{agent}"),
            agent,
            vec![san],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
    }

    let mut tokens = String::from(
        "# Operator tokens for `controller --tokens`: SHA-256 digests only; the tokens\n# themselves are in token-<name>.txt (give each to its operator).\n",
    );
    for (name, role) in &operators {
        let uri = format!("{OPERATOR_URI_PREFIX}{role}/{name}");
        let san = SanType::URI(uri.as_str().try_into().map_err(cert_err)?);
        issue(
            &mut out,
            &format!("operator-{name}"),
            name,
            vec![san],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let token = random_token()?;
        write(
            &args.out,
            &format!("token-{name}.txt"),
            &format!("{token}\n"),
            true,
            &mut out,
        )?;
        tokens.push_str(&format!(
            "\n[[token]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
            token_digest_hex(&token)
        ));
    }
    write(&args.out, "tokens.toml", &tokens, true, &mut out)?;
    Ok(out)
}

fn cert_err(e: rcgen::Error) -> CliError {
    CliError::Internal(format!("certificate: {e}"))
}

/// 32 random bytes from the kernel, as hex.
fn random_token() -> Result<String, CliError> {
    let mut bytes = [0u8; 32];
    let path = Path::new("/dev/urandom");
    std::io::Read::read_exact(
        &mut std::fs::File::open(path).map_err(|e| CliError::io(path, e))?,
        &mut bytes,
    )
    .map_err(|e| CliError::io(path, e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn create_private_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| CliError::io(dir, e))
}

/// Writes a new file (never replaces one: a second run must not silently rotate a CA).
fn write(
    dir: &Path,
    name: &str,
    text: &str,
    private: bool,
    out: &mut Written,
) -> Result<(), CliError> {
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&path)
        .map_err(|e| CliError::io(&path, e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| CliError::io(&path, e))?;
    out.files.push(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbench_controller::auth::{Principal, Role, principal_of_cert};

    fn der(pem_text: &str) -> Vec<u8> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).unwrap();
        pem.contents
    }

    #[test]
    fn certificates_carry_the_identities_the_controller_reads() {
        let dir = tempfile::tempdir().unwrap();
        let args = CertsArgs {
            out: dir.path().join("c"),
            controller_names: vec!["localhost".into(), "127.0.0.1".into()],
            agents: vec!["gpu-1".into()],
            operators: vec!["alice:admin".into(), "bob:viewer".into()],
        };
        let w = generate(&args).unwrap();
        assert!(w.files.len() >= 13, "{:?}", w.files);
        let read = |n: &str| std::fs::read_to_string(args.out.join(n)).unwrap();
        assert_eq!(
            principal_of_cert(&der(&read("agent-gpu-1.pem"))).unwrap(),
            Principal::Agent("gpu-1".into())
        );
        assert_eq!(
            principal_of_cert(&der(&read("operator-bob.pem"))).unwrap(),
            Principal::Operator {
                name: "bob".into(),
                role: Role::Viewer
            }
        );
        // The controller's certificate names no client identity.
        assert!(principal_of_cert(&der(&read("controller.pem"))).is_err());
        let token = read("token-alice.txt");
        assert!(read("tokens.toml").contains(&token_digest_hex(token.trim())));
        for private in [
            "ca-key.pem",
            "agent-gpu-1-key.pem",
            "token-alice.txt",
            "tokens.toml",
        ] {
            let mode = std::fs::metadata(args.out.join(private))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{private} is readable by others");
        }
        // A second run does not replace the CA.
        let e = generate(&args).unwrap_err();
        assert!(e.to_string().contains("ca.pem"), "{e}");
    }

    #[test]
    fn bad_names_and_roles_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        for (agents, operators) in [(vec!["a/b"], vec![]), (vec![], vec!["x:root"])] {
            let args = CertsArgs {
                out: dir.path().join("c"),
                controller_names: vec!["localhost".into()],
                agents: agents.into_iter().map(String::from).collect(),
                operators: operators.into_iter().map(String::from).collect(),
            };
            assert!(matches!(generate(&args), Err(CliError::Usage(_))));
        }
    }
}
