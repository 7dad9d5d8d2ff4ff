//! Names of temporary files and directories in the base directory.
//!
//! Everything spoolmon writes is first created under a name starting with [`TMP_PREFIX`] and then
//! renamed into place, so order scanning, queue listing and outbox recovery skip such names and
//! start-up cleaning (`queue::clean_tmp`) may remove them. Owns no file itself; used by
//! `beneath::Dir::replace`, `atomic`, `queue` and the outbox.

/// Temporary names start with this prefix; order scanning and queue listing skip them.
pub const TMP_PREFIX: &str = ".tmp-";

/// The temporary name a replacement of `name` is written under: hidden (`.tmp-`), unique per
/// process and call (`<pid>-<n>`), ending in `.part` so readers that pick files by extension
/// (node_exporter reads every `*.prom` in its directory) never take a file still being written,
/// and short whatever `name` is (at most its first 64 bytes are kept, as text), so a name near
/// the 255-byte limit still has a temporary name.
pub fn temp_name(name: &std::ffi::OsStr) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let text = name.to_string_lossy();
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{TMP_PREFIX}{}-{n}-{}.part", std::process::id(), &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_hidden_and_never_keep_the_target_extension() {
        let name = temp_name("metrics.prom".as_ref());
        let long = temp_name(std::ffi::OsStr::new(&"x".repeat(250)));
        assert!(long.len() < 100, "{long}");
        assert_ne!(temp_name("a".as_ref()), temp_name("a".as_ref()), "unique per call");
        assert!(name.starts_with(TMP_PREFIX), "{name}");
        assert!(!name.ends_with(".prom"), "a *.prom reader would pick it up: {name}");
    }
}
