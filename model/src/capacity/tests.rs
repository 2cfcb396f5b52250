use super::*;

/// `actual` within `relative` of `expected` (or within `relative` absolutely near zero).
fn assert_close(actual: f64, expected: f64, relative: f64) {
    let tolerance = relative * expected.abs().max(1e-300);
    assert!((actual - expected).abs() <= tolerance, "{actual} is not within {relative:e} of {expected}");
}

fn mmc(arrival_per_s: f64, service_s_mean: f64, servers: u32) -> Mmc {
    Mmc::new(arrival_per_s, service_s_mean, servers).unwrap()
}

#[test]
fn mm1_at_half_load_matches_hand_values() {
    // λ = 0.5/s, μ = 1/s, c = 1: ρ = 0.5 and C = ρ = 0.5 (the recursion: B(1) = a / (1 + a)
    // = 0.5 / 1.5 = 1/3, C = (1/3) / (1 − 0.5·(2/3)) = (1/3) / (2/3) = 0.5).
    // W_q = C / (μ − λ) = 0.5 / 0.5 = 1 s; W = W_q + 1/μ = 2 s.
    // L = λW = 0.5·2 = 1; L_q = λW_q = 0.5·1 = 0.5.
    // T ~ Exp(μ − λ = 0.5): p50 = ln 2 / 0.5 = 1.386294 s, p99 = ln 100 / 0.5 = 9.210340 s.
    // P(W_q > t) = 0.5·e^{−0.5t}: p50 is 0 (p <= 1 − C), p90 = ln(0.5 / 0.1) / 0.5 = 2 ln 5
    // = 3.218876 s.
    let q = mmc(0.5, 1.0, 1);
    assert_close(q.utilisation(), 0.5, 1e-15);
    assert_close(q.erlang_c(), 0.5, 1e-15);
    assert_close(q.wait_s_mean(), 1.0, 1e-15);
    assert_close(q.sojourn_s_mean(), 2.0, 1e-15);
    assert_close(q.in_system_mean(), 1.0, 1e-15);
    assert_close(q.in_queue_mean(), 0.5, 1e-15);
    assert_close(q.sojourn_s_quantile(0.5), 1.386_294_361, 1e-9);
    assert_close(q.sojourn_s_quantile(0.99), 9.210_340_372, 1e-9);
    assert_eq!(q.wait_s_quantile(0.5), 0.0);
    assert_close(q.wait_s_quantile(0.9), 3.218_875_825, 1e-9);
}

#[test]
fn mm1_sojourn_is_exponential_at_mu_minus_lambda() {
    // For c = 1 the mixture collapses: C = ρ and α = μ − λ, and T ~ Exp(μ − λ), so
    // P(T > t) = e^{−(μ − λ)t} and the p-quantile is ln(1 / (1 − p)) / (μ − λ).
    for (arrival_per_s, service_s_mean) in [(0.5, 1.0), (900.0, 1e-3), (0.99, 1.0), (1e-3, 10.0), (3.0, 0.25)] {
        let q = mmc(arrival_per_s, service_s_mean, 1);
        let rate = 1.0 / service_s_mean - arrival_per_s;
        for t in [0.1, 1.0, 3.0, 10.0].map(|k| k / rate) {
            assert_close(q.sojourn_survival(t), (-rate * t).exp(), 1e-12);
            assert_close(q.sojourn_cdf(t), -(-rate * t).exp_m1(), 1e-12);
        }
        for p in [0.01, 0.5, 0.9, 0.99, 0.9999] {
            assert_close(q.sojourn_s_quantile(p), (1.0 / (1.0 - p)).ln() / rate, 1e-9);
        }
    }
}

#[test]
fn mm2_at_half_load_matches_hand_values() {
    // λ = 1/s, μ = 1/s, c = 2: a = 1, ρ = 0.5.
    // B(1) = 1·1 / (1 + 1) = 1/2; B(2) = 1·(1/2) / (2 + 1/2) = 1/5;
    // C = (1/5) / (1 − 0.5·(4/5)) = (1/5) / (3/5) = 1/3.
    // W_q = (1/3) / (2·1 − 1) = 1/3 s; W = 1/3 + 1 = 4/3 s; L = 4/3; L_q = 1/3.
    let q = mmc(1.0, 1.0, 2);
    assert_close(q.utilisation(), 0.5, 1e-15);
    assert_close(q.erlang_c(), 1.0 / 3.0, 1e-15);
    assert_close(q.wait_s_mean(), 1.0 / 3.0, 1e-15);
    assert_close(q.sojourn_s_mean(), 4.0 / 3.0, 1e-15);
    assert_close(q.in_system_mean(), 4.0 / 3.0, 1e-15);
    assert_close(q.in_queue_mean(), 1.0 / 3.0, 1e-15);
}

#[test]
fn equal_drain_and_service_rates_take_the_limit_form() {
    // The same M/M/2 has α = cμ − λ = 2 − 1 = 1 = μ: the α = μ edge, where the general
    // form divides zero by zero. P(X + Y > t) = (1 + t)e^{−t}, so
    // P(T > t) = (2/3)e^{−t} + (1/3)(1 + t)e^{−t} = e^{−t}(1 + t/3):
    // t = 1: (4/3)e^{−1} = 0.490506; t = 2: (5/3)e^{−2} = 0.225559.
    // Its integral, 1 + 1/3, is the mean sojourn 4/3 s found above.
    let q = mmc(1.0, 1.0, 2);
    assert_close(q.sojourn_survival(1.0), 0.490_505_921_6, 1e-9);
    assert_close(q.sojourn_cdf(1.0), 0.509_494_078_4, 1e-9);
    assert_close(q.sojourn_survival(2.0), 0.225_558_805_4, 1e-9);
    for t in [1e-6, 0.1, 1.0, 5.0, 40.0] {
        assert_close(q.sojourn_survival(t), (-t).exp() * (1.0 + t / 3.0), 1e-14);
    }
}

#[test]
fn nearly_equal_rates_do_not_cancel() {
    // A gap of 1e-12 between α and μ moves the tail by about that much; the textbook
    // (α·e^{−μt} − μ·e^{−αt}) / (α − μ) would lose some 12 of its 16 digits here.
    let limit = |t: f64| (-t).exp() * (1.0 + t);
    for gap in [1e-15, 1e-12, 1e-9, -1e-12] {
        for t in [0.5, 1.0, 10.0] {
            assert_close(two_exponentials_survival(1.0 + gap, 1.0, t), limit(t), 1e-8);
        }
    }
    // Slightly either side of λ = 1 in the M/M/2 above, the tail stays continuous.
    for arrival_per_s in [1.0 - 1e-12, 1.0 + 1e-12] {
        let q = mmc(arrival_per_s, 1.0, 2);
        assert_close(q.sojourn_survival(1.0), 0.490_505_921_6, 1e-9);
    }
}

#[test]
fn distinct_rates_match_the_textbook_form() {
    // Far from the edge, the textbook form is accurate and the two must agree:
    // (α·e^{−μt} − μ·e^{−αt}) / (α − μ), with α = 3 and μ = 1, in either order.
    let textbook = |alpha: f64, mu: f64, t: f64| (alpha * (-mu * t).exp() - mu * (-alpha * t).exp()) / (alpha - mu);
    for t in [0.01, 0.5, 2.0, 20.0] {
        assert_close(two_exponentials_survival(3.0, 1.0, t), textbook(3.0, 1.0, t), 1e-13);
        assert_close(two_exponentials_survival(1.0, 3.0, t), textbook(3.0, 1.0, t), 1e-13);
    }
    assert_eq!(two_exponentials_survival(3.0, 1.0, 1e6), 0.0);
}

#[test]
fn mm4_at_0_8_matches_the_textbook_erlang_c() {
    // λ = 3.2/s, μ = 1/s, c = 4: a = 3.2, ρ = 0.8. Textbook:
    // C = (a^c/c!)·(c/(c − a)) / (Σ_{k<c} a^k/k! + (a^c/c!)·(c/(c − a))).
    // a^k/k! for k = 0..3: 1, 3.2, 5.12, 5.461333; sum 14.781333.
    // a^4/4! = 104.8576 / 24 = 4.369067; times 4 / 0.8 = 5: 21.845333.
    // C = 21.845333 / (14.781333 + 21.845333) = 21.845333 / 36.626667 = 0.596432.
    // (The recursion: B = 0.761905, 0.549356, 0.369475, 0.228145;
    // C = 0.228145 / (1 − 0.8·0.771855) = 0.228145 / 0.382516 = 0.596432.)
    // W_q = C / (4 − 3.2) = 0.745541 s; W = 1.745541 s.
    // Wait p99 = ln(0.596432 / 0.01) / 0.8 = 5.110476 s; wait p40 = 0 (0.4 <= 1 − C = 0.4036).
    let q = mmc(3.2, 1.0, 4);
    assert_close(q.utilisation(), 0.8, 1e-15);
    assert_close(q.erlang_c(), 0.596_432_471_8, 1e-9);
    assert_close(q.wait_s_mean(), 0.745_540_589_7, 1e-9);
    assert_close(q.sojourn_s_mean(), 1.745_540_589_7, 1e-9);
    assert_close(q.wait_s_quantile(0.99), 5.110_476_168, 1e-9);
    assert_eq!(q.wait_s_quantile(0.4), 0.0);
}

/// Erlang C by the textbook sums, done in logarithms so that large c does not overflow:
/// ln(a^k / k!) = k·ln a − Σ_{j<=k} ln j. An independent check on the recursion.
fn erlang_c_by_logs(offered: f64, servers: u32) -> f64 {
    let mut log_terms = Vec::with_capacity(servers as usize + 1);
    let mut log_factorial = 0.0;
    for k in 0..=servers {
        if k > 0 {
            log_factorial += f64::from(k).ln();
        }
        log_terms.push(f64::from(k) * offered.ln() - log_factorial);
    }
    let log_last = log_terms[servers as usize] + (f64::from(servers) / (f64::from(servers) - offered)).ln();
    let top = log_terms[..servers as usize].iter().copied().fold(log_last, f64::max);
    let below: f64 = log_terms[..servers as usize].iter().map(|l| (l - top).exp()).sum();
    let last = (log_last - top).exp();
    last / (below + last)
}

#[test]
fn a_thousand_servers_at_0_9_do_not_overflow() {
    // a = 900: a^1000 / 1000! overflows f64 in the textbook form; the recursion must not.
    // Halfin–Whitt puts C near 1 / (1 + β·Φ(β)/φ(β)) with β = (1 − ρ)√c = 3.16, about 1e-3.
    let q = mmc(900.0, 1.0, 1_000);
    let c = q.erlang_c();
    assert!(c > 0.0 && c < 1.0, "C = {c}");
    assert!(c > 1e-4 && c < 1e-2, "C = {c} far from the Halfin–Whitt estimate");
    assert_close(c, erlang_c_by_logs(900.0, 1_000), 1e-9);
    assert!(q.wait_s_mean().is_finite() && q.sojourn_s_quantile(0.999).is_finite());

    let large = mmc(9_900.0, 1.0, 10_000);
    assert_close(large.erlang_c(), erlang_c_by_logs(9_900.0, 10_000), 1e-9);
    let largest = mmc(0.95 * f64::from(MMC_SERVERS_MAX), 1.0, MMC_SERVERS_MAX);
    assert!(largest.erlang_c() >= 0.0 && largest.erlang_c() < 1.0);
}

#[test]
fn erlang_c_matches_the_textbook_sums_across_sizes() {
    for servers in [1, 2, 3, 8, 16, 32, 100, 170] {
        for rho in [0.05, 0.5, 0.8, 0.99] {
            let offered = rho * f64::from(servers);
            assert_close(mmc(offered, 1.0, servers).erlang_c(), erlang_c_by_logs(offered, servers), 1e-9);
        }
    }
}

/// Queues across sizes and loads, with rates in the simulator's range (microseconds).
fn assorted_queues() -> Vec<Mmc> {
    let mut queues = Vec::new();
    for servers in [1, 2, 4, 16, 1_000] {
        for rho in [0.1, 0.5, 0.9, 0.99] {
            let service_s_mean = 50e-6;
            queues.push(mmc(rho * f64::from(servers) / service_s_mean, service_s_mean, servers));
        }
    }
    queues
}

#[test]
fn sojourn_quantiles_round_trip_through_the_cdf() {
    for q in assorted_queues() {
        for p in [1e-3, 0.1, 0.5, 0.9, 0.99, 0.999, 0.99999] {
            let t = q.sojourn_s_quantile(p);
            assert_close(q.sojourn_cdf(t), p, 1e-8);
            // The quantile is pinned to 1e-9 of itself: the CDF crosses p within that.
            assert!(q.sojourn_cdf(t * (1.0 - 1e-9)) <= p && q.sojourn_cdf(t * (1.0 + 1e-9)) >= p, "{q:?} p {p}");
        }
    }
}

#[test]
fn wait_quantiles_round_trip_through_the_tail() {
    // Above 1 − C, P(W_q > quantile) = C·e^{−α·quantile} must give back 1 − p.
    for q in assorted_queues() {
        let alpha = f64::from(q.servers()) / q.service_s_mean() - q.arrival_per_s();
        for p in [0.5, 0.9, 0.99, 0.999] {
            let t = q.wait_s_quantile(p);
            if q.erlang_c() <= 1.0 - p {
                assert_eq!(t, 0.0);
            } else {
                assert_close(q.erlang_c() * (-alpha * t).exp(), 1.0 - p, 1e-9);
            }
        }
    }
}

#[test]
fn mean_sojourn_is_the_integral_of_the_tail() {
    // E[T] = ∫ P(T > t) dt ties the distribution to the mean formula independently;
    // Simpson's rule out to 60 means, where the tail is negligible.
    for q in assorted_queues() {
        let end = 60.0 * q.sojourn_s_mean();
        let steps = 20_000;
        let h = end / f64::from(steps);
        let mut sum = q.sojourn_survival(0.0) + q.sojourn_survival(end);
        for i in 1..steps {
            let weight = if i % 2 == 1 { 4.0 } else { 2.0 };
            sum += weight * q.sojourn_survival(f64::from(i) * h);
        }
        assert_close(sum * h / 3.0, q.sojourn_s_mean(), 1e-6);
    }
}

#[test]
fn no_arrivals_means_no_waiting() {
    // λ = 0: C = 0 (B(k) = 0 for k >= 1), W_q = 0, and T = S ~ Exp(μ): p50 = ln 2·E[S].
    let q = mmc(0.0, 2.0, 3);
    assert_eq!(q.erlang_c(), 0.0);
    assert_eq!(q.wait_s_mean(), 0.0);
    assert_eq!(q.wait_s_quantile(0.999), 0.0);
    assert_close(q.sojourn_s_mean(), 2.0, 1e-15);
    assert_close(q.sojourn_s_quantile(0.5), 2.0 * std::f64::consts::LN_2, 1e-9);
}

#[test]
fn sojourn_distribution_ends_are_exact() {
    let q = mmc(3.2, 1.0, 4);
    assert_eq!(q.sojourn_survival(0.0), 1.0);
    assert_eq!(q.sojourn_survival(-1.0), 1.0);
    assert_eq!(q.sojourn_survival(f64::INFINITY), 0.0);
    assert_eq!(q.sojourn_survival(1e300), 0.0);
    assert_eq!(q.sojourn_cdf(0.0), 0.0);
    assert_eq!(q.sojourn_s_quantile(0.0), 0.0);
    // So small a p that 1 − p rounds to 1: the bisection must still end, near zero.
    assert!(q.sojourn_s_quantile(1e-300) < 1e-12);
}

#[test]
fn a_duration_service_time_is_the_same_queue() {
    let from_duration = Mmc::with_service_time(8_000.0, Duration::from_micros(50), 16).unwrap();
    assert_eq!(from_duration, mmc(8_000.0, 50e-6, 16));
    // 8,000/s × 50 µs = 0.4 Erlangs over 16 servers: ρ = 0.025.
    assert_close(from_duration.utilisation(), 0.025, 1e-12);
}

#[test]
fn unstable_queues_are_refused() {
    // ρ = 2·1 / 2 = 1: exactly saturated; ρ = 3·1 / 2 = 1.5: overloaded.
    assert_eq!(Mmc::new(2.0, 1.0, 2), Err(ModelError::Unstable { utilisation: 1.0 }));
    assert_eq!(Mmc::new(3.0, 1.0, 2), Err(ModelError::Unstable { utilisation: 1.5 }));
    assert_eq!(Mmc::new(1e300, 1e300, 1), Err(ModelError::Unstable { utilisation: f64::INFINITY }));
    assert!(Mmc::new(0.999_999, 1.0, 1).is_ok());
}

#[test]
fn bad_server_counts_are_refused() {
    assert_eq!(Mmc::new(1.0, 1.0, 0), Err(ModelError::InvalidServers { servers: 0 }));
    let too_many = MMC_SERVERS_MAX + 1;
    assert_eq!(Mmc::new(1.0, 1.0, too_many), Err(ModelError::InvalidServers { servers: too_many }));
}

#[test]
fn bad_rates_and_times_are_refused() {
    let refused = |arrival_per_s: f64, service_s_mean: f64| match Mmc::new(arrival_per_s, service_s_mean, 4) {
        Err(ModelError::InvalidQuantity { name, .. }) => name,
        other => panic!("{arrival_per_s}, {service_s_mean} gave {other:?}"),
    };
    for bad in [-1.0, -1e-300, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(refused(bad, 1.0), "arrival_per_s");
    }
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(refused(1.0, bad), "service_s_mean");
    }
    assert!(matches!(
        Mmc::with_service_time(1.0, Duration::ZERO, 1),
        Err(ModelError::InvalidQuantity { name: "service_s_mean", .. })
    ));
}

#[test]
fn refusals_say_what_was_wrong() {
    let text = Mmc::new(f64::NAN, 1.0, 1).unwrap_err().to_string();
    assert_eq!(text, "arrival_per_s is NaN, but must be a finite rate >= 0");
    let text = Mmc::new(3.0, 1.0, 2).unwrap_err().to_string();
    assert!(text.starts_with("utilisation is 1.5000, but must be below 1"), "{text}");
    let text = Mmc::new(1.0, 1.0, 0).unwrap_err().to_string();
    assert_eq!(text, "0 servers, but a queue needs 1 to 1000000 servers");
}

#[test]
fn free_functions_match_hand_values() {
    // 1,000 msg/s × 50 µs = 0.05 Erlangs over 16 cores: ρ = 0.003125.
    assert_close(utilisation(1_000.0, 50e-6, 16), 0.003_125, 1e-12);
    // An overloaded tier still gets its number: 3/s × 1 s over 2 servers = 1.5.
    assert_eq!(utilisation(3.0, 1.0, 2), 1.5);
    // Little: 2,000 req/s each staying 5 ms gives 10 in flight.
    assert_close(little_l(2_000.0, 5e-3), 10.0, 1e-12);
}

#[test]
#[should_panic(expected = "utilisation of zero servers")]
fn utilisation_of_zero_servers_is_a_programmer_error() {
    utilisation(1.0, 1.0, 0);
}

#[test]
#[should_panic(expected = "mean time")]
fn little_with_a_negative_time_is_a_programmer_error() {
    little_l(1.0, -1.0);
}

#[test]
#[should_panic(expected = "quantile 1 outside [0, 1)")]
fn the_one_quantile_is_a_programmer_error() {
    mmc(0.5, 1.0, 1).sojourn_s_quantile(1.0);
}

#[test]
#[should_panic(expected = "outside [0, 1)")]
fn a_negative_wait_quantile_is_a_programmer_error() {
    mmc(0.5, 1.0, 1).wait_s_quantile(-0.1);
}
