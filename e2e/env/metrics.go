package env

import (
	"fmt"
	"net/http"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// PluginMetricsPath is where the router of examples/monitoring/traefik-metrics.yml answers.
const PluginMetricsPath = "/metrics"

// Metrics is one scrape of the plugin's metrics, as Prometheus's own text parser reads it: the
// families by name (oboexchange_requests_total...).
type Metrics map[string]*dto.MetricFamily

// PluginMetrics scrapes the plugin's metrics router on the "metrics" entry point. It fails on an
// answer Prometheus would not take: another status or content type, a line the parser refuses, or
// two samples of a family with the same labels (two caches that no label tells apart).
func (t *Traefik) PluginMetrics() (Metrics, error) {
	return ScrapePluginMetrics(t.MetricsURL + PluginMetricsPath)
}

// ScrapePluginMetrics is PluginMetrics for any URL.
func ScrapePluginMetrics(url string) (Metrics, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; version=0.0.4" {
		return nil, fmt.Errorf("GET %s: Content-Type %q, want text/plain; version=0.0.4", url, ct)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("the plugin's metrics do not parse: %w", err)
	}
	for name, f := range families {
		seen := map[string]bool{}
		for _, m := range f.GetMetric() {
			sig := Signature(m)
			if seen[sig] {
				return nil, fmt.Errorf("%s{%s} is served twice", name, sig)
			}
			seen[sig] = true
		}
	}
	return families, nil
}

// Signature is a sample's labels, sorted: `cache="...",flow="..."`.
func Signature(m *dto.Metric) string {
	var pairs []string
	for _, l := range m.GetLabel() {
		pairs = append(pairs, l.GetName()+"="+fmt.Sprintf("%q", l.GetValue()))
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

// Label returns the value of a sample's label.
func Label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Matching returns the samples of a family whose labels include the given ones.
func (ms Metrics) Matching(family string, labels map[string]string) []*dto.Metric {
	var out []*dto.Metric
	f := ms[family]
	if f == nil {
		return nil
	}
	for _, m := range f.GetMetric() {
		match := true
		for k, v := range labels {
			if Label(m, k) != v {
				match = false
			}
		}
		if match {
			out = append(out, m)
		}
	}
	return out
}

// Value is a counter's or a gauge's value, a histogram's count.
func Value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// Sum adds the values of the samples of a family whose labels include the given ones.
func (ms Metrics) Sum(family string, labels map[string]string) float64 {
	total := 0.0
	for _, m := range ms.Matching(family, labels) {
		total += Value(m)
	}
	return total
}

// LatencySum adds the sample sums (seconds) of a histogram's samples matching the labels.
func (ms Metrics) LatencySum(family string, labels map[string]string) float64 {
	total := 0.0
	for _, m := range ms.Matching(family, labels) {
		total += m.GetHistogram().GetSampleSum()
	}
	return total
}
