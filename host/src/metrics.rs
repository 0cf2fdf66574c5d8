//! Prometheus metrics (`GET /_weft/admin/v1/metrics`, or `/metrics` on
//! the admin listener), per plugin and in total, rendered on each scrape
//! from the counters the runtime and the host already keep: nothing is
//! counted twice, and a scrape costs a walk of the login table and the
//! queues.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use weft_runtime::{LATENCY_BUCKETS, Registry};

use crate::bridge::Bridge;
use crate::logins::Logins;
use crate::outbox::Outbox;

/// What a scrape reads.
#[derive(Clone)]
pub struct Sources {
    /// The plugins and their counters.
    pub registry: Arc<Registry>,
    /// The login records (states).
    pub logins: Arc<Logins>,
    /// Remote events waiting, and dead letters.
    pub outbox: Arc<Outbox>,
    /// The Matrix side's inbound queue, if there is one.
    pub bridge: Option<Arc<Bridge>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

/// The metrics in the Prometheus text format.
pub fn render(sources: &Sources) -> anyhow::Result<String> {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(sources.clone()));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// A histogram from counts already bucketed.
struct ConstHistogram<'a> {
    buckets: &'a [u64],
    sum: f64,
}

impl EncodeMetric for ConstHistogram<'_> {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::MAX]);
        let buckets: Vec<(f64, u64)> = bounds.zip(self.buckets.iter().copied()).collect();
        let count = self.buckets.iter().sum();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum, count, &buckets, None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    rows: impl IntoIterator<Item = (Vec<(&'static str, String)>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in rows {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let plugins = self.registry.plugin_metrics();
        let by_plugin = |value: fn(&weft_runtime::PluginMetrics) -> u64| {
            plugins
                .iter()
                .map(move |p| (vec![("plugin", p.plugin.clone())], value(p)))
                .collect::<Vec<_>>()
        };
        let counters = |rows: Vec<(Vec<(&'static str, String)>, u64)>| {
            rows.into_iter()
                .map(|(l, v)| (l, counter(v)))
                .collect::<Vec<_>>()
        };
        family(
            &mut encoder,
            "weft_plugin_live_instances",
            "Instances of the plugin alive now (logins, providers, login processes, routes).",
            MetricType::Gauge,
            by_plugin(|p| p.live_instances)
                .into_iter()
                .map(|(l, v)| (l, gauge(v))),
        )?;
        for (name, help, value) in [
            (
                "weft_plugin_calls",
                "Calls into the plugin.",
                (|p| p.calls) as fn(&weft_runtime::PluginMetrics) -> u64,
            ),
            (
                "weft_plugin_traps",
                "Calls that trapped or ran out of time or memory.",
                |p| p.traps,
            ),
            (
                "weft_plugin_restarts",
                "Login instances restarted after a trap.",
                |p| p.restarts,
            ),
            (
                "weft_plugin_events_out",
                "Remote events the plugin queued for Matrix.",
                |p| p.events_out,
            ),
            (
                "weft_plugin_events_in",
                "Matrix events handed to the plugin.",
                |p| p.events_in,
            ),
            (
                "weft_plugin_kv_written_bytes",
                "Bytes the plugin wrote to its key-value state.",
                |p| p.kv_bytes_written,
            ),
        ] {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Counter,
                counters(by_plugin(value)),
            )?;
        }
        let http: Vec<_> = plugins
            .iter()
            .flat_map(|p| {
                p.http_by_outcome.iter().map(|(outcome, count)| {
                    (
                        vec![
                            ("plugin", p.plugin.clone()),
                            ("outcome", (*outcome).to_owned()),
                        ],
                        counter(*count),
                    )
                })
            })
            .collect();
        family(
            &mut encoder,
            "weft_plugin_http_requests",
            "The plugin's outgoing HTTP requests, by how they ended.",
            MetricType::Counter,
            http,
        )?;
        let histograms: Vec<_> = plugins
            .iter()
            .map(|p| {
                (
                    vec![("plugin", p.plugin.clone())],
                    ConstHistogram {
                        buckets: &p.latency_buckets,
                        sum: p.latency_sum_seconds,
                    },
                )
            })
            .collect();
        family(
            &mut encoder,
            "weft_plugin_call_duration_seconds",
            "How long calls into the plugin took.",
            MetricType::Histogram,
            histograms,
        )?;

        let totals = self.registry.metrics();
        for (name, help, value) in [
            (
                "weft_instances_created",
                "Instances created (starts, restarts, wakes, upgrades, processes).",
                totals.instances_created,
            ),
            ("weft_calls", "Calls into plugins.", totals.calls),
            (
                "weft_traps",
                "Calls that trapped or ran out of time or memory.",
                totals.traps,
            ),
            (
                "weft_hibernations",
                "Times a login dropped its instance to hibernate.",
                totals.hibernations,
            ),
            (
                "weft_wakes",
                "Times a hibernating login woke.",
                totals.wakes,
            ),
            ("weft_timers_fired", "Timer firings.", totals.timers_fired),
        ] {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Counter,
                [(Vec::new(), counter(value))],
            )?;
        }
        let live: u64 = plugins.iter().map(|p| p.live_instances).sum();
        family(
            &mut encoder,
            "weft_live_instances",
            "Plugin instances alive now, over every plugin.",
            MetricType::Gauge,
            [(Vec::new(), gauge(live))],
        )?;

        let mut logins: BTreeMap<(String, String), u64> = BTreeMap::new();
        for record in self.logins.store.all().map_err(|_| std::fmt::Error)? {
            let state = serde_json::to_value(record.state.state_event)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            *logins
                .entry((record.key.plugin.clone(), state))
                .or_default() += 1;
        }
        family(
            &mut encoder,
            "weft_logins",
            "Logins, by plugin and bridge state.",
            MetricType::Gauge,
            logins
                .into_iter()
                .map(|((plugin, state), n)| (vec![("plugin", plugin), ("state", state)], gauge(n))),
        )?;
        let outbox = self.outbox.pending_count().map_err(|_| std::fmt::Error)?;
        let mut queues = vec![(vec![("queue", "outbox".to_owned())], gauge(outbox as u64))];
        let mut dead = vec![(
            vec![("queue", "outbox".to_owned())],
            gauge(
                self.outbox
                    .dead_letter_count()
                    .map_err(|_| std::fmt::Error)? as u64,
            ),
        )];
        if let Some(bridge) = &self.bridge {
            let pending: usize = bridge
                .inbound_pending()
                .map_err(|_| std::fmt::Error)?
                .values()
                .sum();
            queues.push((vec![("queue", "inbound".to_owned())], gauge(pending as u64)));
            let letters = bridge
                .inbound_dead_letters(100_000)
                .map_err(|_| std::fmt::Error)?
                .len();
            dead.push((vec![("queue", "inbound".to_owned())], gauge(letters as u64)));
        }
        family(
            &mut encoder,
            "weft_queue_depth",
            "Events waiting: remote events to bridge (outbox), Matrix events to handle (inbound).",
            MetricType::Gauge,
            queues,
        )?;
        family(
            &mut encoder,
            "weft_dead_letters",
            "Events that could not be bridged, kept for the operator.",
            MetricType::Gauge,
            dead,
        )?;
        Ok(())
    }
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
