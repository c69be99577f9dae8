//! Summary statistics of a run: percentiles, Jain's index, convergence.

/// Nearest-rank percentile (`q` in [0, 1]) of `v`, which is sorted in place. `None` if empty.
pub fn percentile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Mean and population standard deviation.
pub fn mean_std(v: &[f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    Some((mean, var.sqrt()))
}

/// Jain's fairness index of `x`: `(sum x)^2 / (n * sum x^2)`; 1 is perfectly fair.
pub fn jain(x: &[f64]) -> Option<f64> {
    let sum: f64 = x.iter().sum();
    let sq: f64 = x.iter().map(|v| v * v).sum();
    if x.is_empty() || sq == 0.0 {
        return None;
    }
    Some(sum * sum / (x.len() as f64 * sq))
}

/// Sum of `trace[from..to]` (bins beyond the trace count as zero).
pub fn window_sum(trace: &[u32], from: usize, to: usize) -> f64 {
    let to = to.min(trace.len());
    if from >= to {
        return 0.0;
    }
    trace[from..to].iter().map(|&b| b as f64).sum()
}

/// First bin `t >= from` (before `limit - width`) at which every trace in `flows` delivered,
/// over `[t, t + width)`, within `tol` (relative) of `fair` bytes. `None` if never.
pub fn converged_at(
    flows: &[Vec<u32>],
    from: usize,
    limit: usize,
    width: usize,
    fair: f64,
    tol: f64,
) -> Option<usize> {
    let mut t = from;
    while t + width <= limit {
        if flows.iter().all(|tr| {
            let s = window_sum(tr, t, t + width);
            (s - fair).abs() <= tol * fair
        }) {
            return Some(t);
        }
        t += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_jain() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), Some(50.0));
        assert_eq!(percentile(&mut v, 0.99), Some(99.0));
        assert_eq!(percentile(&mut v, 1.0), Some(100.0));
        assert_eq!(percentile(&mut [], 0.5), None);
        assert_eq!(jain(&[1.0, 1.0, 1.0]), Some(1.0));
        assert!((jain(&[1.0, 0.0]).unwrap() - 0.5).abs() < 1e-12);
        let (m, s) = mean_std(&[1.0, 3.0]).unwrap();
        assert_eq!((m, s), (2.0, 1.0));
    }

    #[test]
    fn convergence_needs_every_flow_within_tolerance_for_the_whole_window() {
        let a = vec![10, 10, 10, 10, 10, 10];
        let b = vec![0, 5, 10, 10, 10, 10];
        let flows = vec![a, b];
        assert_eq!(converged_at(&flows, 0, 6, 2, 20.0, 0.1), Some(2));
        assert_eq!(converged_at(&flows, 0, 6, 2, 40.0, 0.1), None);
    }
}
