package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPrintsRunStepAndSpawnSpans runs the example with the stdout exporter and checks that
// it printed the spans of the runs, the executed steps and the spawn batch, that each run
// links to a span it printed, and the metrics summary.
func TestPrintsRunStepAndSpawnSpans(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "") // stdout, whatever the environment says
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out))
	text := out.String()
	require.Contains(t, text, "result: order 7 confirmed with res-7")

	// The stdout exporter prints one JSON object per span.
	spans := map[string]int{}
	ids := map[string]bool{}
	var links []string
	dec := json.NewDecoder(strings.NewReader(text[:strings.Index(text, "result:")]))
	for dec.More() {
		var s struct {
			Name        string
			SpanContext struct{ SpanID string }
			Links       []struct{ SpanContext struct{ SpanID string } }
		}
		require.NoError(t, dec.Decode(&s))
		spans[s.Name]++
		ids[s.SpanContext.SpanID] = true
		for _, l := range s.Links {
			links = append(links, l.SpanContext.SpanID)
		}
	}
	for name, n := range map[string]int{
		"checkout":            1,
		"start tracing.order": 1,
		"step reserve":        2, // failed once, then retried
		"step confirm":        1,
		"spawn notify":        1,
		"run tracing.notify":  2,
		"step send":           2,
	} {
		require.Equal(t, n, spans[name], "spans named %q", name)
	}
	require.GreaterOrEqual(t, spans["run tracing.order"], 3, "retry, sleep and merge make at least three runs")
	require.NotEmpty(t, links)
	for _, l := range links {
		require.True(t, ids[l], "every link points at a span of this trace output")
	}
	require.Regexp(t, regexp.MustCompile(`chronoforge\.step\.retries \(\{retry\}\) \{chronoforge\.step\.name=reserve chronoforge\.workflow\.name=tracing\.order\} value=1`), text)
}
