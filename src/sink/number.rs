//! Numbers in the sinks' text protocols: the shortest text that reads back as the same `f64`.
//!
//! Both Graphite's plaintext protocol (Python `float()`) and InfluxDB line protocol (float fields)
//! read these spellings. Formatting writes into the caller's buffer: no allocation per value.

/// Integers below this magnitude are exact in an `f64` and printed without a decimal point.
const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53

/// Appends `value` to `out`: integers of magnitude below 2^53 as plain digits (`3`, `-40`, `0`
/// also for `-0.0`), every other finite value in the shortest form that round-trips (`0.25`,
/// `1e-7`, `1.5e300`, `1e16`). Callers skip non-finite values: neither protocol can carry them.
pub fn write_number(out: &mut Vec<u8>, value: f64) {
    debug_assert!(value.is_finite(), "non-finite value {value}");
    // Below 2^53 the conversion to i64 and back is exact for integers and changes every other
    // value; `fract()` compiled to a call to libm's `trunc` per value.
    let integer = value as i64;
    if value.abs() < EXACT_INTEGER_LIMIT && integer as f64 == value {
        write_integer(out, integer);
    } else {
        out.extend_from_slice(ryu::Buffer::new().format(value).as_bytes());
    }
}

/// Appends the decimal digits of `value` to `out`.
pub fn write_integer(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: f64) -> String {
        let mut out = Vec::new();
        write_number(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn integers_have_no_decimal_point() {
        assert_eq!(text(0.0), "0");
        assert_eq!(text(-0.0), "0");
        assert_eq!(text(3.0), "3");
        assert_eq!(text(-40.0), "-40");
        assert_eq!(text(100.0), "100");
        assert_eq!(text(9_007_199_254_740_991.0), "9007199254740991");
    }

    #[test]
    fn fractions_use_the_shortest_round_trip_text() {
        assert_eq!(text(0.25), "0.25");
        assert_eq!(text(0.1), "0.1");
        assert_eq!(text(-2.5e-3), "-0.0025");
        assert_eq!(text(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(text(100.0 / 3.0), "33.333333333333336");
    }

    #[test]
    fn tiny_and_huge_values_use_an_exponent() {
        assert_eq!(text(1e-7), "1e-7");
        assert_eq!(text(5.7e-300), "5.7e-300");
        assert_eq!(text(f64::MIN_POSITIVE), "2.2250738585072014e-308");
        assert_eq!(text(1e16), "1e16");
        assert_eq!(text(-1.5e300), "-1.5e300");
        assert_eq!(text(f64::MAX), "1.7976931348623157e308");
    }

    #[test]
    fn every_text_reads_back_as_the_same_value() {
        let values = [1e-7, 0.1, 1.0 / 3.0, 123456.789, 1e16, 2.5e-300, -7.0, f64::MAX];
        for value in values {
            assert_eq!(text(value).parse::<f64>().unwrap(), value, "{value}");
        }
    }
}
