//! `vsva completions` and `vsva man`: generated from the parser, loadable by the shell, and
//! quiet when their reader stops early.

use std::process::{Command, Stdio};

fn vsva(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vsva"))
        .args(args)
        .output()
        .expect("run vsva")
}

#[test]
fn bash_sources_the_completions_and_completes_subcommands() {
    let script = vsva(&["completions", "bash"]);
    assert!(script.status.success());
    let path = std::env::temp_dir().join(format!("vsva-completion-{}.bash", std::process::id()));
    std::fs::write(&path, &script.stdout).unwrap();
    // Source the script, then ask its function what `vsva pa<TAB>` and `vsva pasid <TAB>` offer.
    let probe = format!(
        r#"source '{}' || exit 3
complete -p vsva || exit 4
COMP_WORDS=(vsva pa); COMP_CWORD=1; _vsva vsva pa vsva; echo "top: ${{COMPREPLY[*]}}"
COMP_WORDS=(vsva pasid ''); COMP_CWORD=2; _vsva vsva '' pasid; echo "pasid: ${{COMPREPLY[*]}}""#,
        path.display()
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &probe])
        .output()
        .expect("run bash");
    std::fs::remove_file(&path).ok();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bash failed: {text} {:?}", out.stderr);
    assert!(text.contains("complete -o"), "{text}");
    assert!(text.contains("top: pasid"), "{text}");
    let pasid_line = text.lines().find(|l| l.starts_with("pasid:")).unwrap();
    assert!(
        pasid_line.contains("alloc") && pasid_line.contains("free"),
        "{pasid_line}"
    );
}

#[test]
fn every_shell_gets_a_script_and_a_wrong_one_is_named() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = vsva(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("pgwalk") && text.contains("quota"), "{shell}");
    }
    let out = vsva(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'tcsh'") && err.contains("bash"), "{err}");
}

#[test]
fn asking_for_no_pasids_is_a_usage_error() {
    // Refused by the parser, before any daemon is looked for.
    let out = vsva(&["pasid", "alloc", "-n", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--count") && err.contains("at least 1"),
        "{err}"
    );
}

#[test]
fn the_manual_page_is_roff_naming_every_command() {
    let out = vsva(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH vsva 1"), "{page}");
    for cmd in [
        "pgwalk",
        "status",
        "sets",
        "pasid",
        "quota",
        "faults",
        "demo",
        "completions",
    ] {
        assert!(page.contains(cmd), "the page names {cmd}");
    }
}

#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    for args in [&["man"][..], &["completions", "bash"][..]] {
        // Stdout is a pipe whose reader is already gone: the first write fails with EPIPE.
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_vsva"))
            .args(args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {:?}", out.status);
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
