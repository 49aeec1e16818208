//! The release artifacts of `deploy/`: the configuration file the Debian package
//! installs lists every setting the server knows (and nothing else), and the
//! package itself, built by `cargo deb` from the binary this suite built,
//! installs, runs as its own user and purges cleanly on this machine.
//!
//! The package test changes the machine it runs on (a user, `/usr/bin/otpgate`,
//! `/etc/otpgate`, `/var/lib/otpgate`) and undoes it: it needs root, `dpkg` and
//! `cargo-deb` (installed by `scripts/install-test-deps.sh`) and fails, never
//! skips, without them. It refuses to run where otpgate is installed already.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use figment::Figment;
use figment::providers::{Format, Toml};
use figment::value::{Dict, Value};
use otpgate::config::{Config, Mode};
use serde::de::value::{Error as DeError, StrDeserializer};
use serde::de::{DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shipped_config() -> String {
    std::fs::read_to_string(workspace_root().join("deploy/otpgate.toml")).unwrap()
}

/// The shipped file with every commented setting turned on: a line `#x` where
/// `x` is neither a space nor `#` is a setting (or table header) shown commented;
/// prose comments are `# ...`.
fn every_setting_turned_on(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if !rest.is_empty() && !rest.starts_with([' ', '#']) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The dotted paths of every setting `Config` reads, found by deserializing it
/// from a deserializer that offers every field a struct names. Arrays of tables
/// are entered once (`routes.smpp.host`); the keys of a map are written `*`
/// (`voice.voices.*.pitch`), and `maps` lists the paths that are maps.
#[derive(Default)]
struct Settings {
    keys: BTreeSet<String>,
    maps: BTreeSet<String>,
}

struct Recorder<'a> {
    path: String,
    found: &'a RefCell<Settings>,
}

impl<'a> Recorder<'a> {
    fn child(&self, name: &str) -> Recorder<'a> {
        let path = if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        };
        Recorder {
            path,
            found: self.found,
        }
    }

    fn leaf(&self) {
        self.found.borrow_mut().keys.insert(self.path.clone());
    }
}

macro_rules! numbers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.leaf();
            visitor.visit_u64(0)
        }
    )*};
}

impl<'de> Deserializer<'de> for Recorder<'_> {
    type Error = DeError;

    /// Untagged enums (`validity_period`) ask for anything: a string fits.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.leaf();
        visitor.visit_str("")
    }

    numbers!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
             deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64);

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.leaf();
        visitor.visit_bool(false)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.leaf();
        visitor.visit_f64(0.0)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.leaf();
        visitor.visit_f32(0.0)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.leaf();
        visitor.visit_str("")
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_seq(OneElement(Some(self)))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.found.borrow_mut().maps.insert(self.path.clone());
        let value = self.child("*");
        visitor.visit_map(Fields {
            fields: vec![("*", value)],
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let fields = fields.iter().map(|f| (*f, self.child(f))).collect();
        visitor.visit_map(Fields { fields })
    }

    /// Unit-variant enums (`mode`, `method`): the first variant.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.leaf();
        let first: StrDeserializer<'_, DeError> = variants[0].into_deserializer();
        visitor.visit_enum(first)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct tuple
        tuple_struct identifier ignored_any
    }
}

struct OneElement<'a>(Option<Recorder<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.0.take().map(|r| seed.deserialize(r)).transpose()
    }
}

struct Fields<'a> {
    fields: Vec<(&'static str, Recorder<'a>)>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.fields.first() {
            Some((name, _)) => {
                let name: StrDeserializer<'_, DeError> = name.into_deserializer();
                seed.deserialize(name).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (_, recorder) = self.fields.remove(0);
        seed.deserialize(recorder)
    }
}

fn settings_config_reads() -> Settings {
    let found = RefCell::new(Settings::default());
    let root = Recorder {
        path: String::new(),
        found: &found,
    };
    // A route offered every driver's table is refused, but only once all of
    // them were read: `routes` is the last setting, so every key is recorded.
    if let Err(e) = <Config as serde::Deserialize>::deserialize(root) {
        assert!(e.to_string().starts_with("route : "), "{e}");
    }
    found.into_inner()
}

/// The dotted paths of the settings in a parsed file, map keys written `*`.
fn settings_in(dict: &Dict, prefix: &str, maps: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    for (key, value) in dict {
        let key = if maps.contains(prefix) { "*" } else { key };
        let path = if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Dict(_, inner) => settings_in(inner, &path, maps, out),
            Value::Array(_, items) if items.iter().any(|i| matches!(i, Value::Dict(..))) => {
                for item in items {
                    if let Value::Dict(_, inner) = item {
                        settings_in(inner, &path, maps, out);
                    }
                }
            }
            _ => {
                out.insert(path);
            }
        }
    }
}

#[test]
fn the_shipped_configuration_lists_every_setting_and_nothing_else() {
    let all_on = every_setting_turned_on(&shipped_config());
    // deny_unknown_fields: a misspelt or removed setting fails here.
    if let Err(e) = Figment::from(Toml::string(&all_on)).extract::<Config>() {
        panic!("deploy/otpgate.toml with every setting turned on does not load: {e}");
    }
    let known = settings_config_reads();
    let dict: Dict = Figment::from(Toml::string(&all_on)).extract().unwrap();
    let mut listed = BTreeSet::new();
    settings_in(&dict, "", &known.maps, &mut listed);
    let missing: Vec<_> = known.keys.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&known.keys).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "deploy/otpgate.toml must show every setting, commented (`#key = value`): \
         missing {missing:?}, not settings {unknown:?}"
    );
    assert!(known.keys.contains("routes.smpp.host") && known.keys.contains("voice.voices.*.pitch"));
}

#[test]
fn the_shipped_configuration_runs_in_production_mode_with_its_state_under_var_lib() {
    let config: Config = Figment::from(Toml::string(&shipped_config()))
        .extract()
        .unwrap();
    assert_eq!(config.mode, Mode::Production);
    assert_eq!(
        config.database_url.expose(),
        "sqlite:///var/lib/otpgate/otpgate.db"
    );
    for path in [&config.delivery.log_path, &config.delivery.voice_dir] {
        assert!(path.starts_with("/var/lib/otpgate/"), "{path}");
    }
    assert!(config.secrets.hmac_key.is_none() && config.auth.token_secret.is_none());
}

/// Runs a command to its end; panics with its output when it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}", "otpgate"])
        .output()
        .is_ok_and(|o| o.stdout != b"not-installed" && !o.stdout.is_empty())
}

/// A command as the package's user, with the environment the systemd unit gives
/// the service: nothing inherited, the secrets file loaded (which also shows that
/// the user can read it), the packaged configuration.
fn as_service_user(args: &str, extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=otpgate",
        "--regid=otpgate",
        "--init-groups",
        "--",
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
    ]);
    for (k, v) in extra_env {
        cmd.arg(format!("{k}={v}"));
    }
    cmd.args([
        "sh",
        "-c",
        &format!(
            "set -a; . /etc/otpgate/secrets.env; set +a; \
             exec /usr/bin/otpgate --config /etc/otpgate/otpgate.toml {args}"
        ),
    ])
    .current_dir("/var/lib/otpgate");
    cmd
}

/// Undoes the installation however the test ends.
struct Installed {
    server: Option<Child>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        if is_installed() {
            let _ = Command::new("dpkg").args(["--purge", "otpgate"]).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debian_package_installs_runs_as_its_own_user_sends_an_otp_and_purges_cleanly() {
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "this test installs a Debian package: run the suite as root"
    );
    for tool in ["dpkg", "dpkg-deb", "setpriv", "cargo-deb"] {
        assert!(
            succeeds("sh", &["-c", &format!("command -v {tool}")]),
            "{tool} is missing: run scripts/install-test-deps.sh"
        );
    }
    // One package test at a time on this machine (other checkouts run it too).
    let lock = std::fs::File::create("/run/lock/otpgate-package-test.lock")
        .or_else(|_| std::fs::File::create("/tmp/otpgate-package-test.lock"))
        .unwrap();
    lock.lock().unwrap();
    assert!(
        !is_installed() && !succeeds("getent", &["passwd", "otpgate"]),
        "otpgate (or its user) is already on this machine; this test installs and purges \
         the package and will not touch an existing installation (dpkg --purge otpgate)"
    );

    // The binary this suite built, packaged as it is (stripped into the package).
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_otpgate"));
    let profile_dir = bin.parent().unwrap();
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev",
        other => other,
    };
    let out = tempfile::tempdir().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .args([
            "deb",
            "-p",
            "otpgate",
            "--no-build",
            "--fast",
            "--profile",
            profile,
        ])
        .arg("-o")
        .arg(out.path())
        .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
        .current_dir(workspace_root()));
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo deb wrote a .deb");
    let fields = run(Command::new("dpkg-deb").args(["-f"]).arg(&deb));
    assert!(fields.contains("Recommends: espeak-ng"), "{fields}");

    let mut installed = Installed { server: None };
    run(Command::new("dpkg").arg("-i").arg(&deb));

    // What the package put in place.
    let ls = |path: &str| run(Command::new("stat").args(["-c", "%U:%G %a", path]));
    assert_eq!(ls("/usr/bin/otpgate").trim(), "root:root 755");
    assert_eq!(
        ls("/etc/otpgate/otpgate.toml").trim(),
        "root:otpgate 640",
        "route credentials live in the configuration"
    );
    assert_eq!(
        ls("/etc/otpgate/secrets.env").trim(),
        "otpgate:otpgate 600",
        "the secrets are the service user's alone"
    );
    assert_eq!(ls("/var/lib/otpgate").trim(), "otpgate:otpgate 750");
    let secrets = std::fs::read_to_string("/etc/otpgate/secrets.env").unwrap();
    for key in [
        "OTPGATE_SECRETS__HMAC_KEY=",
        "OTPGATE_SECRETS__ENCRYPTION_KEYS__K1=",
        "OTPGATE_AUTH__TOKEN_SECRET=",
    ] {
        let value = secrets
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} is generated"));
        assert_eq!(value.len(), 44, "{key}: 32 bytes in base64");
    }
    let unit = run(Command::new("dpkg").args(["-L", "otpgate"]))
        .lines()
        .find(|l| l.ends_with("/systemd/system/otpgate.service"))
        .expect("the package ships the unit")
        .to_owned();
    if Path::new("/usr/bin/systemd-analyze").exists() {
        run(Command::new("systemd-analyze").args(["verify", &unit]));
    }

    // The account an operator makes first, then the service as the unit runs it.
    let created = run(&mut as_service_user(
        "accounts create acme --sms-credits 5 --json",
        &[],
    ));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let key = created["api_key"].as_str().unwrap().to_owned();
    let mut server = as_service_user(
        "serve --listen 127.0.0.1:0",
        &[("OTPGATE_ADMIN_LISTEN", "127.0.0.1:0")],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    // Kept open to the end: a closed pipe would fail the server's next print.
    let mut stdout = BufReader::new(server.stdout.take().unwrap()).lines();
    installed.server = Some(server);
    let base = stdout
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("otpgate listening on ").map(str::to_owned))
        .expect("the installed server starts with the packaged configuration");

    let reply = reqwest::Client::new()
        .post(format!("{base}/api/v1/auths/send/otp/"))
        .bearer_auth(&key)
        .json(&serde_json::json!({
            "number": "9851023212",
            "message": "Your code is {otp}",
            "sms_send_options": "text",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
    // The `log` driver (no routes yet) delivers into the state directory.
    let deliveries = Path::new("/var/lib/otpgate/deliveries.jsonl");
    let waited = Instant::now();
    while !std::fs::read_to_string(deliveries).is_ok_and(|d| d.contains("9851023212")) {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the OTP was not delivered to {}",
            deliveries.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ls("/var/lib/otpgate/otpgate.db").trim(),
        "otpgate:otpgate 600"
    );

    let mut server = installed.server.take().unwrap();
    run(Command::new("kill").args(["-TERM", &server.id().to_string()]));
    let status = server.wait().unwrap();
    assert!(
        status.success(),
        "a SIGTERM stops the service cleanly: {status}"
    );

    run(Command::new("dpkg").args(["--purge", "otpgate"]));
    assert!(!is_installed());
    assert!(
        !succeeds("getent", &["passwd", "otpgate"]),
        "the user is gone"
    );
    assert!(
        !succeeds("getent", &["group", "otpgate"]),
        "the group is gone"
    );
    for path in [
        "/usr/bin/otpgate",
        "/etc/otpgate",
        "/var/lib/otpgate",
        &unit,
        "/etc/systemd/system/multi-user.target.wants/otpgate.service",
    ] {
        assert!(!Path::new(path).exists(), "{path} is left behind");
    }
}
