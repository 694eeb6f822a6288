//! Early and last-resort output: Xen's emergency console (`console_io`),
//! which Xen prints on its own serial line.

/// Print to Xen's emergency console, like `print!`.
#[macro_export]
macro_rules! eprint {
    ($($arg:tt)*) => {{
        let mut out = $crate::hal::console::Io(
            $crate::xen_pv::console::EmergencyConsole($crate::ArmHypervisor),
        );
        let _ = core::fmt::Write::write_fmt(&mut out, format_args!($($arg)*));
    }};
}

/// Print a line to Xen's emergency console, like `println!`.
#[macro_export]
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        $crate::eprint!("{}\n", format_args!($($arg)*));
    }};
}
