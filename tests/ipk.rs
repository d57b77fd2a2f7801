//! scripts/package-ipk.sh: the ipk files list the right contents and control fields, read back
//! with `ar t` / `ar p` and `tar tzf` the way opkg unpacks them.
//!
//! The raopd package is built here from the host's debug binary under the made-up
//! architecture `x86_64_test`: the MIPS binaries come from scripts/build-mips.sh, which this
//! test does not run (the MIPS stage of scripts/test.sh does). The packaging steps are the
//! same for any binary.

mod common;

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `ar p IPK MEMBER`.
fn member(ipk: &Path, name: &str) -> Vec<u8> {
    run(Command::new("ar").arg("p").arg(ipk).arg(name))
}

/// Entries of a tar.gz member (`tar tzf`), and one file's content with `tar xzO`.
fn tar_list(ipk: &Path, name: &str, dir: &Path) -> Vec<String> {
    let f = dir.join(name);
    std::fs::write(&f, member(ipk, name)).unwrap();
    String::from_utf8(run(Command::new("tar").arg("tzf").arg(&f)))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn tar_file(ipk: &Path, name: &str, path: &str, dir: &Path) -> Vec<u8> {
    let f = dir.join(name);
    std::fs::write(&f, member(ipk, name)).unwrap();
    run(Command::new("tar").arg("xzOf").arg(&f).arg(path))
}

fn field(control: &str, key: &str) -> String {
    control
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in\n{control}"))
        .to_string()
}

#[test]
fn ipk_contents_and_control_fields() {
    let repo = common::repo_dir();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ipk");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_raopd");
    let listing = run(Command::new("bash")
        .arg(repo.join("scripts/package-ipk.sh"))
        .arg("--out")
        .arg(&dir)
        .arg("--arch")
        .arg(format!("x86_64_test={bin}")));
    let listing = String::from_utf8(listing).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let raopd = dir.join(format!("raopd_{version}-1_x86_64_test.ipk"));
    let luci = dir.join(format!("luci-app-raopd_{version}-1_all.ipk"));
    assert!(listing.contains(&*raopd.to_string_lossy()), "{listing}");
    assert!(listing.contains(&*luci.to_string_lossy()), "{listing}");

    for ipk in [&raopd, &luci] {
        let members = String::from_utf8(run(Command::new("ar").arg("t").arg(ipk))).unwrap();
        assert_eq!(
            members.lines().collect::<Vec<_>>(),
            ["debian-binary", "control.tar.gz", "data.tar.gz"]
        );
        assert_eq!(member(ipk, "debian-binary"), b"2.0\n");
    }

    // raopd: files, conffiles, scripts, control fields.
    let data = tar_list(&raopd, "data.tar.gz", &dir);
    let files: Vec<&String> = data.iter().filter(|e| !e.ends_with('/')).collect();
    assert_eq!(
        files,
        [
            "./etc/config/raopd",
            "./etc/init.d/raopd",
            "./usr/sbin/raopd"
        ]
    );
    assert_eq!(
        tar_file(&raopd, "data.tar.gz", "./usr/sbin/raopd", &dir),
        std::fs::read(bin).unwrap()
    );
    assert_eq!(
        tar_file(&raopd, "data.tar.gz", "./etc/init.d/raopd", &dir),
        std::fs::read(repo.join("board/openwrt/raopd/files/raopd.init")).unwrap()
    );
    let control_files = tar_list(&raopd, "control.tar.gz", &dir);
    for f in ["./control", "./conffiles", "./postinst", "./prerm"] {
        assert!(control_files.iter().any(|e| e == f), "{control_files:?}");
    }
    let control = String::from_utf8(tar_file(&raopd, "control.tar.gz", "./control", &dir)).unwrap();
    assert_eq!(field(&control, "Package"), "raopd");
    assert_eq!(field(&control, "Version"), format!("{version}-1"));
    assert_eq!(field(&control, "Architecture"), "x86_64_test");
    assert_eq!(field(&control, "License"), "MIT");
    assert_eq!(field(&control, "Section"), "sound");
    assert!(field(&control, "Maintainer").contains('@'));
    let size: u64 = field(&control, "Installed-Size").parse().unwrap();
    assert!(size >= std::fs::metadata(bin).unwrap().len());
    assert_eq!(
        tar_file(&raopd, "control.tar.gz", "./conffiles", &dir),
        b"/etc/config/raopd\n"
    );
    let postinst =
        String::from_utf8(tar_file(&raopd, "control.tar.gz", "./postinst", &dir)).unwrap();
    assert!(postinst.contains("/etc/init.d/raopd enable"));
    assert!(postinst.contains("/etc/init.d/raopd restart"));
    let prerm = String::from_utf8(tar_file(&raopd, "control.tar.gz", "./prerm", &dir)).unwrap();
    assert!(prerm.contains("/etc/init.d/raopd stop"));

    // luci-app-raopd: the view, the card, the backend, menu, ACL, ucitrack.
    let data = tar_list(&luci, "data.tar.gz", &dir);
    let files: Vec<&String> = data.iter().filter(|e| !e.ends_with('/')).collect();
    assert_eq!(
        files,
        [
            "./usr/libexec/rpcd/luci.raopd",
            "./usr/share/luci/menu.d/luci-app-raopd.json",
            "./usr/share/rpcd/acl.d/luci-app-raopd.json",
            "./usr/share/ucitrack/luci-app-raopd.json",
            "./www/luci-static/resources/view/raopd/raopd.js",
            "./www/luci-static/resources/view/status/include/60_raopd.js",
        ]
    );
    let control = String::from_utf8(tar_file(&luci, "control.tar.gz", "./control", &dir)).unwrap();
    assert_eq!(field(&control, "Package"), "luci-app-raopd");
    assert_eq!(field(&control, "Architecture"), "all");
    assert!(field(&control, "Depends").contains("luci-base"));
    assert!(field(&control, "Depends").contains("raopd"));
    let _ = std::fs::remove_dir_all(&dir);
}
