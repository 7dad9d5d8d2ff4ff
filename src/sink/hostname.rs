//! The host's name as one Graphite path component, as haproxystats puts it into its namespace.
//!
//! With `fqdn` the fully qualified name (what `hostname --fqdn` prints: the resolver's canonical
//! name for the host name) with its dots replaced by `_`, e.g. `lb-01_example_com`; without it
//! the short name, the part before the first dot, e.g. `lb-01`. Looked up once, when a sink is
//! built; a name the resolver does not know falls back to the plain host name.

use std::ffi::{CStr, CString};

/// The host name as the kernel knows it (`uname -n`), or `localhost` if it cannot be read.
pub fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The fully qualified name of `host`: the resolver's canonical name, or `host` itself.
pub fn fully_qualified(host: &str) -> String {
    canonical_name(host).unwrap_or_else(|| host.to_string())
}

/// `name` as one path component: with `fqdn`, dots become `_`; without, only the part before
/// the first dot is kept. Characters other than ASCII letters, digits, `-` and `_` become `_`.
pub fn path_component(name: &str, fqdn: bool) -> String {
    let name = if fqdn {
        name
    } else {
        name.split('.').next().unwrap_or(name)
    };
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect()
}

/// What `getaddrinfo(host, AI_CANONNAME)` reports as the canonical name, if anything.
fn canonical_name(host: &str) -> Option<String> {
    let c_host = CString::new(host).ok()?;
    // SAFETY: an all-zero addrinfo is a valid "no hints" value (null pointers, zero fields).
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_CANONNAME;
    hints.ai_family = libc::AF_UNSPEC;
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `c_host` and `hints` outlive the call; `list` is freed below exactly once.
    let rc = unsafe { libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut list) };
    if rc != 0 || list.is_null() {
        return None;
    }
    // SAFETY: `list` is the non-null result of a successful getaddrinfo; `ai_canonname` of its
    // first entry is null or a NUL-terminated string owned by `list`, copied before freeing.
    let name = unsafe {
        let canonical = (*list).ai_canonname;
        let name = (!canonical.is_null()).then(|| CStr::from_ptr(canonical).to_string_lossy().into_owned());
        libc::freeaddrinfo(list);
        name
    };
    name.filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_dots_become_underscores_and_short_name_stops_at_the_first_dot() {
        assert_eq!(path_component("lb-01.example.com", true), "lb-01_example_com");
        assert_eq!(path_component("lb-01.example.com", false), "lb-01");
        assert_eq!(path_component("odd name;x", true), "odd_name_x");
    }

    #[test]
    fn the_local_host_has_a_name_and_localhost_resolves() {
        assert!(!system_hostname().is_empty());
        assert!(!fully_qualified(&system_hostname()).is_empty());
        assert_eq!(fully_qualified("localhost"), "localhost");
        assert_eq!(fully_qualified("no-such-host.invalid"), "no-such-host.invalid");
    }
}
