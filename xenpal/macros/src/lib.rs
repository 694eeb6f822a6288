//! `#[xenpal::main]`: turns a unikernel's `async fn main(platform)` into the
//! program's entry point. Use it through the `xenpal` crate, which holds the
//! runtime this expands to (`xenpal::rt`).
//!
//! Written without `syn`: the attribute only needs the function's name and
//! whether it is `async`, and a token walk finds both, which keeps every
//! guest build free of a parser it would otherwise compile.

use proc_macro::{Delimiter, Group, Ident, TokenStream, TokenTree};

/// The name the user's function is renamed to, so that the generated `main`
/// (on the host) does not clash with it.
const RENAMED: &str = "__xenpal_user_main";

/// Marks the unikernel's entry: `async fn main(platform: xenpal::Platform)`,
/// returning `()` or `Result<(), E>` with `E: Display`.
///
/// On a bare-metal target the framework boots the platform, runs `main`, and
/// powers the domain off when it returns `()` or `Ok`, or crashes it with a
/// report when it returns `Err` or panics. On the host the same function runs
/// in a domain of the simulator (see `xenpal::rt::host_main`).
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return error("#[xenpal::main] takes no arguments");
    }
    let mut tokens: Vec<TokenTree> = item.into_iter().collect();
    let mut is_async = false;
    let mut renamed = false;
    for i in 0..tokens.len() {
        let TokenTree::Ident(id) = &tokens[i] else {
            continue;
        };
        match id.to_string().as_str() {
            "async" => is_async = true,
            "fn" => {
                if let Some(TokenTree::Ident(name)) = tokens.get(i + 1) {
                    let span = name.span();
                    tokens[i + 1] = TokenTree::Ident(Ident::new(RENAMED, span));
                    renamed = true;
                }
                break;
            }
            _ => {}
        }
    }
    if !renamed {
        return error("#[xenpal::main] goes on a function: `async fn main(p: xenpal::Platform)`");
    }
    if !is_async {
        return error("#[xenpal::main] needs an `async fn`");
    }
    let mut out: TokenStream = tokens.into_iter().collect();
    let glue: TokenStream = format!(
        "#[cfg(target_os = \"none\")]
         ::xenpal::__bare_metal_entry!({RENAMED});
         #[cfg(not(target_os = \"none\"))]
         fn main() -> ::std::process::ExitCode {{
             ::xenpal::rt::host_main(env!(\"CARGO_PKG_NAME\"), env!(\"CARGO_MANIFEST_DIR\"), {RENAMED})
         }}"
    )
    .parse()
    .expect("the glue is valid Rust");
    out.extend(glue);
    out
}

/// `compile_error!(msg)` at the call site.
fn error(msg: &str) -> TokenStream {
    let mut ts: TokenStream = "::core::compile_error!".parse().expect("valid path");
    let lit: TokenStream = format!("{msg:?}").parse().expect("a string literal");
    ts.extend([TokenTree::Group(Group::new(Delimiter::Parenthesis, lit))]);
    ts.extend(";".parse::<TokenStream>().expect("a semicolon"));
    ts
}
