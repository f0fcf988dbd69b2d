package engine

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/sandbox"
)

// metrics are the engine's Prometheus series. Labels are bounded sets —
// the loop, an outcome, an error code of abi's list — never a tenant or a
// span id, so the series stay few however many tenants there are.
type metrics struct {
	passes     *prometheus.CounterVec   // loop, outcome
	duration   *prometheus.HistogramVec // loop
	fuel       *prometheus.CounterVec   // loop: fuel of the passes themselves
	executions *prometheus.CounterVec   // status, code: the functions the request worker ran
	execFuel   prometheus.Counter
	violations prometheus.Counter
	policyErrs prometheus.Counter
	telegram   *prometheus.CounterVec // outcome: the messages the telegram worker closed
	backoff    prometheus.GaugeFunc
	collectors []prometheus.Collector
}

// telegramOutcomes are how the telegram worker closes a message
// (guests/kernels/telegram_worker.js, abi/ABI.md); any other is "other".
var telegramOutcomes = map[string]bool{"answered": true, "send_failed": true, "send_timeout": true, "answer_failed": true,
	"empty_answer": true, "bot_not_configured": true, "invalid_input": true, "invalid_output": true}

// errorCodes are the error codes an execution label may carry; any other is
// "other".
var errorCodes = map[string]bool{}

func init() {
	for _, c := range []string{abi.CodeFuelExhausted, abi.CodeMemoryLimit, abi.CodeOutputLimit, abi.CodeHostCallLimit,
		abi.CodeTimeout, abi.CodeTrap, abi.CodeGuestError, abi.CodeForbiddenImport, abi.CodeInvalidModule,
		abi.CodeHashMismatch, abi.CodeUnsigned, abi.CodeNotAllowed, abi.CodeCapabilityDenied, abi.CodeQuotaExceeded,
		abi.CodeInvalidOutput, "not_found"} {
		errorCodes[c] = true
	}
}

func newMetrics(e *Engine) *metrics {
	m := &metrics{
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logline_engine_passes_total", Help: "Kernel passes by loop and outcome (ok, busy, failed, refused).",
		}, []string{"loop", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "logline_engine_pass_duration_seconds", Help: "Kernel pass duration by loop.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"loop"}),
		fuel: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logline_engine_pass_fuel_total", Help: "Fuel the kernel passes used, by loop.",
		}, []string{"loop"}),
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logline_executions_total", Help: "Function executions the request worker recorded, by status and error code.",
		}, []string{"status", "code"}),
		execFuel: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "logline_execution_fuel_total", Help: "Fuel used by the executions the request worker ran.",
		}),
		violations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "logline_quota_violations_total", Help: "Requests refused by the daily execution quota.",
		}),
		policyErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "logline_policy_errors_total", Help: "policy_error spans the policy agent emitted.",
		}),
		telegram: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logline_telegram_messages_total", Help: "Telegram messages the telegram worker closed, by outcome (answered, or the error code).",
		}, []string{"outcome"}),
	}
	m.backoff = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "logline_engine_passes_backing_off", Help: "Passes (loop, tenant, lane) waiting out the back-off of a failure.",
	}, func() float64 {
		e.failMu.Lock()
		defer e.failMu.Unlock()
		return float64(len(e.failing))
	})
	open := func(name, help, q string) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			// A partial index of open work; a scrape never waits long.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			var n int64 = -1
			_ = e.l.InTx(ctx, ledger.System(), pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, q).Scan(&n)
			})
			return float64(n)
		})
	}
	// The sandbox's counters, read at scrape time.
	stat := func(name, help string, counter bool, v func(sandbox.Stats) int64) prometheus.Collector {
		f := func() float64 { return float64(v(e.h.SandboxStats())) }
		if counter {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
		}
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.collectors = []prometheus.Collector{m.passes, m.duration, m.fuel, m.executions, m.execFuel, m.violations, m.policyErrs, m.telegram, m.backoff,
		open("logline_open_requests", "Requests waiting for the request worker (-1: could not read).",
			`SELECT count(*) FROM ledger.heads WHERE entity_type = 'request' AND status = 'scheduled'`),
		open("logline_open_prompt_requests", "Prompt requests waiting for the prompt worker (-1: could not read).",
			`SELECT count(*) FROM ledger.heads WHERE entity_type = 'prompt_request' AND status = 'scheduled'`),
		open("logline_open_telegram_messages", "Telegram messages waiting for the telegram worker (-1: could not read).",
			`SELECT count(*) FROM ledger.heads WHERE entity_type = 'telegram_message' AND status = 'received'`),
		stat("logline_sandbox_instances_created_total", "Sandbox instances instantiated afresh.", true,
			func(s sandbox.Stats) int64 { return s.InstancesCreated }),
		stat("logline_sandbox_instances_reused_total", "Runs that took a pristine pooled instance.", true,
			func(s sandbox.Stats) int64 { return s.InstancesReused }),
		stat("logline_sandbox_instances_pooled", "Pristine instances pooled now.", false,
			func(s sandbox.Stats) int64 { return int64(s.InstancesIdle) }),
		stat("logline_sandbox_modules_compiled_total", "Module compilations.", true,
			func(s sandbox.Stats) int64 { return s.ModulesCompiled }),
		stat("logline_sandbox_module_cache_hits_total", "Module loads that found the module compiled already.", true,
			func(s sandbox.Stats) int64 { return s.ModuleCacheHits }),
	}
	return m
}

// passOutput is what the kernels say of a pass (every field optional).
type passOutput struct {
	More         bool           `json:"more"`
	Processed    int            `json:"processed"`
	Busy         bool           `json:"busy"`
	Ran          int            `json:"ran"`
	Blocked      int            `json:"blocked"`
	Failed       int            `json:"failed"`
	Codes        map[string]int `json:"codes"`
	Fuel         float64        `json:"fuel"`
	PolicyErrors int            `json:"policy_errors"`
	// The telegram worker's: messages answered, and closed as failed by
	// error code.
	Answered int            `json:"answered"`
	Errors   map[string]int `json:"errors"`
}

func (m *metrics) observe(loop string, took time.Duration, fuel int64, out passOutput) {
	outcome := "ok"
	if out.Busy {
		outcome = "busy"
	}
	m.passes.WithLabelValues(loop, outcome).Inc()
	m.duration.WithLabelValues(loop).Observe(took.Seconds())
	m.fuel.WithLabelValues(loop).Add(float64(fuel))
	if out.Ran > 0 {
		if ok := out.Ran - out.Failed; ok > 0 {
			m.executions.WithLabelValues("complete", "").Add(float64(ok))
		}
		for c, n := range out.Codes {
			if !errorCodes[c] {
				c = "other"
			}
			m.executions.WithLabelValues("error", c).Add(float64(n))
		}
	}
	m.execFuel.Add(out.Fuel)
	m.violations.Add(float64(out.Blocked))
	m.policyErrs.Add(float64(out.PolicyErrors))
	if out.Answered > 0 {
		m.telegram.WithLabelValues("answered").Add(float64(out.Answered))
	}
	for c, n := range out.Errors {
		if !telegramOutcomes[c] || c == "answered" {
			c = "other"
		}
		m.telegram.WithLabelValues(c).Add(float64(n))
	}
}

// Collectors are the engine's Prometheus collectors, for a registry (the
// API server's: api.Config.Collectors).
func (e *Engine) Collectors() []prometheus.Collector { return e.m.collectors }
