//! diaryd installed as the README says and run by a real systemd: a
//! machine booted in its own PID, mount and network namespaces (systemd is
//! its PID 1), with `/usr`, `/etc` and `/var/lib` kept in a directory of the
//! test so that it survives a reboot and the host is left untouched. The
//! README's install commands run in it as written; then the socket brings
//! diaryd up on the first write, `systemctl status` shows it ready, man and
//! bash completion find what was installed, and after a power-off and a
//! second boot the socket is up again with the entry kept.
//!
//! Needs root, `unshare`, `nsenter`, `ip`, `man` and systemd's own binary:
//! without them it prints SKIPPED (or fails under `DIARY_TEST_NO_SKIP`).

mod common;

use common::{have_tool, skip};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SYSTEMD: [&str; 2] = ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"];

/// What the machine needs of this one, or why it cannot boot here.
fn missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("booting systemd in namespaces needs root".into());
    }
    for tool in ["unshare", "nsenter", "ip", "man", "bash"] {
        if !have_tool(tool) {
            return Some(format!("no {tool} on PATH"));
        }
    }
    if !SYSTEMD.iter().any(|p| Path::new(p).exists()) {
        return Some("systemd is not installed (apt-get install systemd)".into());
    }
    None
}

/// The namespaces' setup, then systemd as their PID 1. `$1` is the
/// machine's directory: its `/usr` and `/etc` are overlays whose changes
/// are kept there, its `/var/lib` is there; `/run`, `/tmp` and `/var/log`
/// are fresh at each boot (systemd empties `/tmp` at boot: the host's
/// must stay out of its reach). It boots to `basic.target`, which holds
/// `sockets.target` where the diary's socket is enabled, and not the host's
/// own services (`multi-user.target`: cron, sshd, … on a developer's machine).
const BOOT: &str = r#"
set -e
m=$1
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
mount -t tmpfs tmpfs /var/log
for d in usr etc; do
    mkdir -p "$m/$d/upper" "$m/$d/work"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$m/$d/upper,workdir=$m/$d/work" "/$d"
done
mkdir -p "$m/var-lib"
mount --bind "$m/var-lib" /var/lib
ip link set lo up
exec "$2" --system --unit=basic.target
"#;

/// A booted machine; powered off (or killed) on drop.
struct Machine {
    unshare: Child,
    init: u32,
}

impl Machine {
    fn boot(dir: &Path) -> Machine {
        let systemd = SYSTEMD.iter().find(|p| Path::new(p).exists()).unwrap();
        let unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount",
                "--mount-proc",
                "--net",
                "--uts",
                "--propagation",
                "private",
                "sh",
                "-c",
                BOOT,
                "boot",
            ])
            .arg(dir)
            .arg(systemd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        let init = loop {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = text.split_whitespace().next() {
                break pid.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "unshare started no init");
            std::thread::sleep(Duration::from_millis(20));
        };
        let machine = Machine { unshare, init };
        machine.wait_until_up();
        machine
    }

    /// Until systemd says the boot is done ("degraded": some unit of the
    /// host's failed in a container, which is not ours to judge).
    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.sh("systemctl is-system-running");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                return;
            }
            assert!(Instant::now() < deadline, "systemd still {state:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `script` run by sh inside the machine (every namespace, its root).
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a", "sh", "-c", script])
            .env("DIARY_CONFIG", "/nonexistent/diary-tests/config.toml")
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `script` must succeed; its stdout.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        let said = format!(
            "{script}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{said}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl poweroff`, and the namespaces gone.
    fn power_off(mut self) {
        let _ = self.sh("systemctl poweroff");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.unshare.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the machine did not power off");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if self.unshare.try_wait().ok().flatten().is_none() {
            // SIGKILL to a PID namespace's init ends every process in it.
            // SAFETY: a signal to a process this test started.
            unsafe { libc::kill(self.init as i32, libc::SIGKILL) };
            let _ = self.unshare.wait();
        }
    }
}

/// The README's install commands ("Run it as a service"), as a root shell
/// runs them: `sudo` left out, `target/dist` where this test wrote it.
fn readme_install(dist: &Path) -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("## Run it as a service")
        .nth(1)
        .expect("README has \"Run it as a service\"");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block");
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.strip_prefix("sudo ")
                .unwrap_or(&l)
                .replace("target/dist", &dist.display().to_string())
        })
        .collect()
}

#[test]
fn the_documented_install_runs_under_a_real_systemd_and_survives_a_reboot() {
    if let Some(why) = missing() {
        skip(&why);
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dist = dir.path().join("dist");
    let bin = Path::new(env!("CARGO_BIN_EXE_diaryd")).parent().unwrap();
    let built = Command::new(repo.join("contrib/dist.sh"))
        .env("DIARY_DIST_BINARIES", bin)
        .env("DIARY_DIST_OUT", &dist)
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let install = readme_install(&dist);
    assert_eq!(install.first().map(String::as_str), Some("contrib/dist.sh"));
    let machine_dir = dir.path().join("machine");

    let machine = Machine::boot(&machine_dir);
    let cd = format!("cd '{}' && ", repo.display());
    for line in &install[1..] {
        match line.as_str() {
            // Asked below, once there is something to show.
            "systemctl status diaryd" | "man diaryd" => {}
            line => {
                machine.ok(&format!("{cd}{line}"));
            }
        }
    }
    assert!(
        install
            .iter()
            .any(|l| l == "systemctl enable --now diaryd.socket")
    );
    // Socket activation: the socket is up, diaryd only on the first client.
    assert_eq!(
        machine.ok("systemctl is-active diaryd.socket").trim(),
        "active"
    );
    assert_eq!(
        String::from_utf8_lossy(&machine.sh("systemctl is-active diaryd.service").stdout).trim(),
        "inactive"
    );
    let stored = machine.ok("diary write 'written through systemd, 经由 systemd'");
    assert!(stored.starts_with("stored #1 "), "{stored}");
    let status = machine.ok("systemctl status diaryd --no-pager");
    assert!(status.contains("active (running)"), "{status}");
    assert!(
        status.contains("TriggeredBy:") && status.contains("diaryd.socket"),
        "{status}"
    );
    // The status line catches up with the write within a second or so.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = machine.ok("systemctl show -p StatusText --value diaryd");
        if shown.trim() == "serving 1 entry on 127.0.0.1:8888" {
            break;
        }
        assert!(Instant::now() < deadline, "status: {shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The hardening holds: a dynamic user, the diary private to it.
    let owner = machine.ok("stat -c '%U %a' /var/lib/private/diary/diary.log");
    assert_eq!(owner.trim(), "diaryd 600");
    let user = machine.ok("stat -c %U /proc/$(systemctl show -p MainPID --value diaryd)");
    assert_eq!(user.trim(), "diaryd");
    // What the install put beside it: the manual and tab completion.
    let page = machine.ok("man diaryd");
    assert!(
        page.contains("diaryd") && page.contains("--fsync"),
        "{page}"
    );
    let completed = machine.ok("bash -c '. /usr/share/bash-completion/completions/diary; \
         COMP_WORDS=(diary wri); COMP_CWORD=1; COMP_LINE=\"diary wri\"; COMP_POINT=9; \
         _diary diary wri diary; echo \"${COMPREPLY[*]}\"'");
    assert_eq!(completed.trim(), "write");
    // Reload re-reads the allow file and sessions; the service stays up.
    machine.ok("systemctl reload diaryd");
    assert_eq!(machine.ok("systemctl is-active diaryd").trim(), "active");
    machine.power_off();

    // A second boot: the socket is enabled, diaryd comes up on demand, the
    // entry is there.
    let machine = Machine::boot(&machine_dir);
    assert_eq!(
        machine.ok("systemctl is-active diaryd.socket").trim(),
        "active"
    );
    let past = machine.ok("diary past");
    assert!(
        past.contains("written through systemd, 经由 systemd"),
        "{past}"
    );
    // A clean stop says everything acknowledged is in the file.
    machine.ok("systemctl stop diaryd");
    let log = machine.ok("journalctl -u diaryd --no-pager -o cat");
    assert!(
        log.contains("stopped; everything acknowledged is in /var/lib/private/diary/diary.log"),
        "{log}"
    );
    machine.power_off();
}
