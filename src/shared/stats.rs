//! Ping statistics of one order for one step, as pingmachine defines them (done right).

/// Loss count and the sorted round-trip times (seconds) of one step.
#[derive(Clone, Debug, PartialEq)]
pub struct PingStats {
    pub pings: u32,
    /// Pings without an answer (a count, not a percentage).
    pub loss: u32,
    /// Answered RTTs in seconds, ascending.
    pub sorted: Vec<f64>,
}

impl PingStats {
    /// Statistics of `rtts` (one entry per ping sent). Non-finite or negative values count as lost.
    pub fn from_rtts(rtts: &[Option<f64>]) -> PingStats {
        let mut sorted: Vec<f64> = rtts
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .collect();
        sorted.sort_by(f64::total_cmp);
        let pings = rtts.len() as u32;
        PingStats {
            pings,
            loss: pings - sorted.len() as u32,
            sorted,
        }
    }

    pub fn min(&self) -> Option<f64> {
        self.sorted.first().copied()
    }

    /// The upper median `sorted[n / 2]` (pingmachine's and Smokeping's choice), from sorted values.
    pub fn median(&self) -> Option<f64> {
        self.sorted.get(self.sorted.len() / 2).copied()
    }

    pub fn max(&self) -> Option<f64> {
        self.sorted.last().copied()
    }

    /// Lost pings as a percentage of pings sent (100 when nothing was sent).
    pub fn loss_percent(&self) -> f64 {
        if self.pings == 0 {
            100.0
        } else {
            100.0 * f64::from(self.loss) / f64::from(self.pings)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_use_sorted_values_and_upper_median() {
        let stats = PingStats::from_rtts(&[Some(0.3), None, Some(0.1), Some(0.4), Some(0.2)]);
        assert_eq!(stats.loss, 1);
        assert_eq!(stats.sorted, vec![0.1, 0.2, 0.3, 0.4]);
        assert_eq!(
            (stats.min(), stats.median(), stats.max()),
            (Some(0.1), Some(0.3), Some(0.4))
        );
        assert_eq!(stats.loss_percent(), 20.0);
    }

    #[test]
    fn no_answers_gives_full_loss_and_no_values() {
        let stats = PingStats::from_rtts(&[None, None, None]);
        assert_eq!(
            (stats.loss, stats.min(), stats.median(), stats.max()),
            (3, None, None, None)
        );
        assert_eq!(stats.loss_percent(), 100.0);
    }

    #[test]
    fn nonsense_values_count_as_lost() {
        let stats = PingStats::from_rtts(&[Some(f64::NAN), Some(-1.0), Some(f64::INFINITY), Some(0.5)]);
        assert_eq!((stats.loss, stats.median()), (3, Some(0.5)));
    }
}
