//! The `control` rig (`--dom0 linux control`): dom0 drives the guest with
//! `xl reboot`, an unknown request written into `control/shutdown`, and
//! `xl shutdown`, and checks on the guest's console and in `xl list` that it
//! rebooted, ignored the unknown request, and powered off.

use crate::cpio::Entry;
use crate::dom0::script;

/// Sourced by dom0's `/init` once the guest is created (`say`, `fail` and
/// `$seen`, the guest's whole console, come from there).
/// Sourced by dom0's `/init` once the guest is created (`say`, `fail`,
/// `$log`, the guest's console log, and `$seen`, the relay's copy of the
/// whole console, come from there). xenconsoled may start `$log` afresh
/// when the guest reboots, and the relay may or may not follow it there,
/// so checks read both files.
const WITH: &str = r#"said() { cat $seen $log 2>/dev/null | grep -q -- "$1"; }
ready() { grep -c 'waiting for xl shutdown or xl reboot' $seen 2>/dev/null || echo 0; }
# wait_for SECONDS DESCRIPTION COMMAND...: run COMMAND each second until it
# succeeds (its arguments are expanded once: put checks in functions).
wait_for() {
    t=$1; what=$2; shift 2; n=0
    until "$@"; do n=$((n + 1)); [ $n -gt $t ] && fail "$what"; sleep 1; done
}
up_once() { test "$(ready)" -ge 1; }
rebooted() { said 'xenpal: exit: reboot'; }
# A new domain under the same name, and its console says it is waiting:
# either the relay saw the line twice, or the log started afresh with it.
back() {
    d=$(xl domid xenpal 2>/dev/null) && [ -n "$d" ] && [ "$d" != "$first" ] || return 1
    [ "$(ready)" -ge 2 ] && return 0
    grep -q 'waiting for xl' $log 2>/dev/null && ! grep -q 'exit: reboot' $log
}
ignored() { said '"bogus" is not supported'; }
cleared() { test -z "$(xenstore-read /local/domain/$second/control/shutdown)"; }
state() { xl list xenpal 2>/dev/null | tail -n +2 | tr -s ' ' | tr '\n' ';'; }
wait_for 60 "the guest never said it was waiting" up_once
first=$(xl domid xenpal)
say "control: guest up as domain $first; xl reboot"
xl reboot xenpal || fail "xl reboot"
wait_for 60 "the guest did not reboot (no exit line)" rebooted
wait_for 90 "xl did not restart the guest after its reboot (xl list: $(state))" back
second=$(xl domid xenpal)
say "control: xl reboot: the guest rebooted and came back as domain $second"
xenstore-write /local/domain/$second/control/shutdown bogus || fail "xenstore-write"
wait_for 30 "the guest did not report the unknown request" ignored
wait_for 30 "the guest did not clear control/shutdown" cleared
xl list xenpal | tail -n 1 | tr -s ' ' | cut -d ' ' -f 5 | grep -q '^[rb-]*$' \
    || fail "an unknown request stopped the guest"
say "control: an unknown request was acknowledged and ignored"
say "control: xl shutdown"
xl shutdown xenpal || fail "xl shutdown"
"#;

/// Run once the guest has shut down (still preserved): how it ended.
const AFTER: &str = r#"said 'xenpal: exit: poweroff' || fail "xl shutdown: no poweroff line"
say "control: xl shutdown: the guest powered off"
"#;

/// dom0's extra files: the hooks `/init` runs.
pub fn dom0_files() -> Vec<(String, Entry)> {
    vec![
        script("etc/xen/with-guest", WITH),
        script("etc/xen/after-guest", AFTER),
    ]
}
