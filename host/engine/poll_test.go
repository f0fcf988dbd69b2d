package engine_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/engine"
	"github.com/logline/logline/host/ledger"
)

// logBuffer is a log destination tests read while the engine writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// With the ledger's notifications off, the engine learns of work by
// polling (every second, the default) and runs it. Its loops sweep only an
// hour apart here, so after their first sweep nothing but the polled
// notices can wake them: the second function runs because polling saw it,
// then saw its request.
func TestEnginePollsWithoutNotifications(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	startEngine(t, w.url, engine.Config{Observer: time.Hour, Requests: time.Hour, Policies: time.Hour, Prompts: time.Hour, Log: log},
		ledger.WithoutNotify())

	first := w.append(t, alice, jsFunction(`return input.a * 2`, "scheduled", map[string]int{"a": 21}))[0]
	ex := w.execution(t, first.ID, testTimeout)
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	require.JSONEq(t, `42`, string(ex.Output))

	start := time.Now()
	second := w.append(t, alice, jsFunction(`return { sum: input.a + input.b }`, "scheduled", map[string]int{"a": 1, "b": 2}))[0]
	ex = w.execution(t, second.ID, testTimeout)
	t.Logf("scheduled to executed, polling: %s", time.Since(start))
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	require.JSONEq(t, `{"sum":3}`, string(ex.Output))
	require.Len(t, w.spans(t, "request", second.ID), 1, "exactly one request")

	require.Contains(t, logs.String(), "ledger notifications off; polling the ledger", "said once")
	require.Equal(t, 1, strings.Count(logs.String(), "polling the ledger"))
}
