// Package engine runs the kernels that keep the ledger moving — observer
// (scheduled functions → requests), request_worker (requests → executions),
// policy_agent (new spans → policy actions), prompt_worker (prompt runs,
// scheduled evals and bandit decisions) and telegram_worker (Telegram
// messages → replies, for the tenants a bot is bound to) — for every tenant, on the
// manifest's intervals and at once when a NOTIFY says there is work
// (contract §6).
//
// The engine itself is host code of Stage-0's trust: it decides which
// tenant has work (from ledger.heads, whose partial indexes hold open
// requests, active policies and recurring functions, so finding work costs
// what is open, not the ledger's history), and boots the kernel for that
// tenant with stage0.Host.Tick, under the tenant's service principal, so a
// kernel never sees another tenant's rows. Everything else — quotas,
// exactly-once, cursors — is the kernels' (guests/kernels): they derive the
// ids of what they emit from the work itself and append each pass as one
// array, so several engines on one database never record a request twice,
// and a per-tenant lease (a session advisory lock that dies with its host)
// keeps them from doing the same work at the same time. No queue, no
// consensus: Postgres is the coordinator.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/stage0"
	"github.com/logline/logline/host/telemetry"
)

// Kernel names: the keys of the manifest's kernels map the engine runs.
const (
	Observer      = "observer"
	RequestWorker = "request_worker"
	PolicyAgent   = "policy_agent"
	// PromptWorker runs the prompt system's open runs and schedules
	// (guests/kernels/prompt_worker.js).
	PromptWorker = "prompt_worker"
	// TelegramWorker answers the messages the Telegram webhook appended,
	// for the tenants the manifest binds a bot to
	// (guests/kernels/telegram_worker.js).
	TelegramWorker = "telegram_worker"
)

// internal are the entity types the kernels write for their own
// bookkeeping: they never wake anyone (a cursor would wake the agent that
// wrote it, for ever).
var internal = ledger.Bookkeeping

// Config tunes an Engine. Zero values take the manifest's intervals, then
// the defaults.
type Config struct {
	// Intervals of the loops' sweeps over every tenant with standing work
	// (notifications wake a tenant's kernel sooner).
	Observer, Requests, Policies, Prompts, Telegram time.Duration
	// Concurrency is how many kernel runs the engine has in flight at
	// once, all loops together (default 4).
	Concurrency int
	// Batch is passed to the kernels as env BATCH (requests or spans per
	// pass; 0: the kernels' own default).
	Batch int
	// Log receives what the engine does (default: slog.Default()).
	Log *slog.Logger
}

// Defaults of Config.
const (
	DefaultObserver    = 2 * time.Second
	DefaultRequests    = 2 * time.Second
	DefaultPolicies    = 5 * time.Second
	DefaultPrompts     = 30 * time.Second
	DefaultTelegram    = 5 * time.Second
	DefaultConcurrency = 4
)

// Engine runs the loops. Run it once; it is done when Run returns.
type Engine struct {
	l     *ledger.Ledger
	h     *stage0.Host
	cfg   Config
	log   *slog.Logger
	loops map[string]*loop

	runs sync.WaitGroup // kernel runs in flight
	sem  chan struct{}  // Concurrency slots

	// judged: what the policies of each tenant declare they judge, for
	// route (judges.go).
	judged judged

	failMu  sync.Mutex
	failing map[pass]*failure // passes whose last run failed

	statusMu sync.Mutex
	status   map[pass]*LoopStatus // each pass's latest outcome, for Status

	m *metrics
}

// pass names the kernel passes of one loop for one tenant and lane.
type pass struct {
	loop, tenant string
	lane         int
}

// failure is a pass that keeps failing: it runs again only after its
// back-off, so a pass that fails on the same work (a kernel bug, a span the
// ledger refuses) records one error span per back-off step instead of one
// per wake-up.
type failure struct {
	attempts int
	until    time.Time
}

// Back-off of a failing pass: Backoff after the first failure, doubling up
// to MaxBackoff.
const (
	Backoff    = time.Second
	MaxBackoff = 5 * time.Minute
)

func backoff(attempt int) time.Duration {
	d := Backoff
	for i := 1; i < attempt && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}

// New makes an Engine over a ledger and the Stage-0 host that boots its
// kernels.
func New(l *ledger.Ledger, h *stage0.Host, cfg Config) *Engine {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	e := &Engine{l: l, h: h, cfg: cfg, log: cfg.Log.With("component", "engine"), loops: map[string]*loop{},
		sem: make(chan struct{}, cfg.Concurrency), failing: map[pass]*failure{}, status: map[pass]*LoopStatus{}}
	e.m = newMetrics(e)
	for _, name := range []string{Observer, RequestWorker, PolicyAgent, PromptWorker, TelegramWorker} {
		e.loops[name] = &loop{name: name, dirty: map[string]bool{}, wake: make(chan struct{}, 1), sweep: true, running: map[pass]bool{}}
	}
	return e
}

// loop is one kernel's schedule: the tenants a notification marked dirty,
// and whether the next pass sweeps every tenant with standing work.
type loop struct {
	name  string
	mu    sync.Mutex
	dirty map[string]bool
	sweep bool
	wake  chan struct{}
	// running are the passes in flight, each with whether it was wanted
	// again while it ran.
	running map[pass]bool
}

// start reports whether pass k may start (none of it is in flight), and
// if so notes it in flight; if not, notes that it is wanted again.
func (lp *loop) start(k pass) bool {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if _, busy := lp.running[k]; busy {
		lp.running[k] = true
		return false
	}
	lp.running[k] = false
	return true
}

// done notes pass k ended and reports whether it was wanted meanwhile.
func (lp *loop) done(k pass) (again bool) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	again = lp.running[k]
	delete(lp.running, k)
	return again
}

func (lp *loop) mark(tenant string) {
	lp.mu.Lock()
	lp.dirty[tenant] = true
	lp.mu.Unlock()
	lp.poke()
}

func (lp *loop) markSweep() {
	lp.mu.Lock()
	lp.sweep = true
	lp.mu.Unlock()
	lp.poke()
}

func (lp *loop) poke() {
	select {
	case lp.wake <- struct{}{}:
	default:
	}
}

// take returns the dirty tenants and whether to sweep, and resets both.
func (lp *loop) take() (map[string]bool, bool) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	d, s := lp.dirty, lp.sweep
	lp.dirty, lp.sweep = map[string]bool{}, false
	return d, s
}

// Run runs the engine until ctx ends, then waits for the kernel runs in
// flight (each is bounded by its own limits) and returns nil. Without
// notifications (ledger.WithoutNotify, or LISTEN unavailable) the ledger's
// listener polls, and its notices wake the loops all the same.
func (e *Engine) Run(ctx context.Context) error {
	notices := make(chan ledger.Notice, 4096)
	listenErr := make(chan error, 1)
	go func() {
		polling := false
		listenErr <- e.l.Listen(ctx, func(n ledger.Notice) {
			if n.Gap && n.Poll != polling {
				polling = n.Poll
				logMode(e.log, n)
			}
			select {
			case notices <- n:
			default:
				// Falling behind: sweep instead of reading every notice.
				for _, lp := range e.loops {
					lp.markSweep()
				}
			}
		})
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		e.warm(ctx)
	}()
	go func() {
		defer wg.Done()
		e.dispatch(ctx, notices)
	}()
	for _, lp := range e.loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.serve(ctx, lp)
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-listenErr:
		if ctx.Err() != nil {
			err = nil
		}
	}
	wg.Wait()
	e.runs.Wait()
	return err
}

// logMode says, once per change, how the ledger's listener now learns
// what committed.
func logMode(log *slog.Logger, n ledger.Notice) {
	switch {
	case !n.Poll:
		log.Info("ledger notifications: listening again")
	case n.Err == nil:
		log.Info("ledger notifications off; polling the ledger")
	default:
		log.Warn("ledger notifications unavailable; polling the ledger", "err", n.Err)
	}
}

// warm loads the manifest's kernels once, at start: compiling the sandbox
// module and a kernel's JavaScript takes up to seconds on a loaded machine,
// which the first requests after a start would otherwise wait for.
func (e *Engine) warm(ctx context.Context) {
	m, err := e.h.LoadManifest(ctx)
	if err != nil {
		return // the loops say why
	}
	for name := range e.loops {
		if name == TelegramWorker && len(m.Telegram.Bots) == 0 {
			continue // no bot bound: the loop never runs, nothing to load
		}
		if id := m.Kernels[name]; id != "" && ctx.Err() == nil {
			if err := e.h.Warm(ctx, id); err != nil && ctx.Err() == nil {
				e.log.Warn("loading kernel", "kernel", name, "err", err)
			}
		}
	}
}

// dispatch turns notices into dirty tenants: it looks the notified ids up
// in ledger.heads, a batch at a time, and wakes the loops their spans
// concern.
func (e *Engine) dispatch(ctx context.Context, notices <-chan ledger.Notice) {
	for {
		var batch []string
		select {
		case <-ctx.Done():
			return
		case n := <-notices:
			if n.Gap {
				for _, lp := range e.loops {
					lp.markSweep()
				}
				continue
			}
			batch = append(batch, n.ID)
		}
		// Gather what arrived meanwhile: one lookup for many notices.
	more:
		for len(batch) < 1000 {
			select {
			case n := <-notices:
				if n.Gap {
					for _, lp := range e.loops {
						lp.markSweep()
					}
					continue
				}
				batch = append(batch, n.ID)
			default:
				break more
			}
		}
		if err := e.route(ctx, batch); err != nil && ctx.Err() == nil {
			e.log.Warn("reading notified spans; sweeping instead", "err", err)
			for _, lp := range e.loops {
				lp.markSweep()
			}
		}
	}
}

func (e *Engine) route(ctx context.Context, ids []string) error {
	return e.l.InTx(ctx, ledger.System(), pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT tenant_id, entity_type, coalesce(status, '') FROM ledger.heads WHERE id = ANY($1::uuid[])`, ids)
		if err != nil {
			return err
		}
		var news []newSpan // for the policy agents (judging)
		for rows.Next() {
			var tenant, kind, status string
			if err := rows.Scan(&tenant, &kind, &status); err != nil {
				return err
			}
			if slices.Contains(internal, kind) {
				continue
			}
			switch {
			case kind == "request" && status == "scheduled":
				e.loops[RequestWorker].mark(tenant)
			case kind == "function" && status == "scheduled":
				e.loops[Observer].mark(tenant)
			case kind == "prompt_request" && status == "scheduled":
				e.loops[PromptWorker].mark(tenant)
			case kind == "telegram_message" && status == "received":
				e.loops[TelegramWorker].mark(tenant) // if a bot is bound to it (serve)
			}
			news = append(news, newSpan{tenant, kind, status})
		}
		if err := rows.Err(); err != nil {
			return err
		}
		tenants, err := e.judging(ctx, news)
		if err != nil {
			return err
		}
		for _, t := range tenants {
			e.loops[PolicyAgent].mark(t)
		}
		return nil
	})
}

// serve runs one loop: on its interval it sweeps every tenant with standing
// work; when woken, it runs the dirty tenants.
func (e *Engine) serve(ctx context.Context, lp *loop) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			lp.markSweep()
		case <-lp.wake:
		}
		dirty, sweep := lp.take()
		m, err := e.h.LoadManifest(ctx)
		if err != nil {
			if ctx.Err() == nil {
				e.log.Warn("no manifest; the engine waits", "loop", lp.name, "err", err)
			}
			timer.Reset(e.interval(lp.name, nil))
			continue
		}
		kernel := m.Kernels[lp.name]
		if kernel == "" {
			timer.Reset(e.interval(lp.name, m))
			continue
		}
		if sweep {
			tenants, err := e.standing(ctx, lp.name, len(m.GlobalPolicies) > 0)
			if err != nil {
				if ctx.Err() == nil {
					e.log.Warn("sweep", "loop", lp.name, "err", err)
				}
			}
			for _, t := range tenants {
				dirty[t] = true
			}
			timer.Reset(e.interval(lp.name, m))
		}
		if lp.name == TelegramWorker {
			// Only the tenants a bot is bound to: the webhook writes
			// nowhere else, and a binding removed stops the answers.
			bound := m.TelegramTenants()
			for t := range dirty {
				if !slices.Contains(bound, t) {
					delete(dirty, t)
				}
			}
		}
		lanes := 1
		if lp.name == RequestWorker {
			lanes = requestLanes(m)
		}
		e.runTenants(ctx, lp, kernel, dirty, lanes)
	}
}

// DefaultRequestLanes is how many request_worker passes of one tenant run
// at once when the manifest does not say; MaxRequestLanes is the most (the
// kernels count a tenant's quota over that many lanes).
const (
	DefaultRequestLanes = 2
	MaxRequestLanes     = 8
)

// requestLanes is the manifest's engine.request_lanes within [1,
// MaxRequestLanes]. Two lanes let one pass run its JavaScript while the
// other waits on Postgres: a single tenant's passes otherwise leave a core
// idle.
func requestLanes(m *stage0.Manifest) int {
	if n := m.Engine.RequestLanes; n > 0 {
		return min(n, MaxRequestLanes)
	}
	return DefaultRequestLanes
}

func (e *Engine) interval(name string, m *stage0.Manifest) time.Duration {
	var cfg time.Duration
	var ms int
	var def time.Duration
	switch name {
	case Observer:
		cfg, def = e.cfg.Observer, DefaultObserver
		if m != nil {
			ms = m.Engine.ObserverMs
		}
	case RequestWorker:
		cfg, def = e.cfg.Requests, DefaultRequests
		if m != nil {
			ms = m.Engine.RequestWorkerMs
		}
	case PromptWorker:
		cfg, def = e.cfg.Prompts, DefaultPrompts
		if m != nil {
			ms = m.Engine.PromptWorkerMs
		}
	case TelegramWorker:
		cfg, def = e.cfg.Telegram, DefaultTelegram
		if m != nil {
			ms = m.Engine.TelegramWorkerMs
		}
	default:
		cfg, def = e.cfg.Policies, DefaultPolicies
		if m != nil {
			ms = m.Engine.PolicyAgentMs
		}
	}
	switch {
	case cfg > 0:
		return cfg
	case ms > 0:
		return time.Duration(ms) * time.Millisecond
	}
	return def
}

// standing lists the tenants with standing work for a loop: open requests,
// scheduled functions, tenants with active policies, or — when the
// manifest has global (stock) policies, which apply to all — every tenant.
// Each is an index scan of what is open, or a loose index scan over the
// tenants.
func (e *Engine) standing(ctx context.Context, name string, globalPolicies bool) ([]string, error) {
	var q string
	switch {
	case name == RequestWorker:
		q = `SELECT DISTINCT tenant_id FROM ledger.heads WHERE entity_type = 'request' AND status = 'scheduled'`
	case name == Observer:
		q = `SELECT DISTINCT tenant_id FROM ledger.heads WHERE entity_type = 'function' AND status = 'scheduled'`
	case name == TelegramWorker:
		// Open messages (migration 008's partial index); serve keeps the
		// tenants a bot is bound to.
		q = `SELECT DISTINCT tenant_id FROM ledger.heads WHERE entity_type = 'telegram_message' AND status = 'received'`
	case name == PromptWorker:
		// Open prompt requests, and the tenants with prompt families
		// (their schedules): both partial indexes of migration 006.
		q = `SELECT tenant_id FROM ledger.heads WHERE entity_type = 'prompt_request' AND status = 'scheduled'
		     UNION SELECT tenant_id FROM ledger.heads WHERE entity_type IN ('prompt_variant', 'prompt_routing')`
	case !globalPolicies:
		q = `SELECT DISTINCT tenant_id FROM ledger.heads WHERE entity_type = 'policy' AND status = 'active'`
	default:
		q = `WITH RECURSIVE t(tenant_id) AS (
		       (SELECT tenant_id FROM ledger.heads ORDER BY tenant_id LIMIT 1)
		       UNION ALL
		       SELECT (SELECT h.tenant_id FROM ledger.heads h WHERE h.tenant_id > t.tenant_id ORDER BY h.tenant_id LIMIT 1)
		       FROM t WHERE t.tenant_id IS NOT NULL)
		     SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL`
	}
	var out []string
	err := e.l.InTx(ctx, ledger.System(), pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, q)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return out, err
}

// runTenants boots the loop's kernel for each tenant and lane, in the
// engine's Concurrency slots, and returns once every pass has its slot: it
// does not wait for them to end. A round that waited for its slowest pass
// left the other lanes idle meanwhile (and made every request that arrived
// during a round wait for the round's end, then a whole pass). A pass
// still in flight from an earlier round is not started twice: it is noted,
// and its tenant is marked again when it ends, as is a tenant whose kernel
// says it has more to do.
func (e *Engine) runTenants(ctx context.Context, lp *loop, kernel string, tenants map[string]bool, lanes int) {
	sem := e.sem
	for t := range tenants {
		for lane := 0; lane < lanes; lane++ {
			if ctx.Err() != nil {
				return
			}
			k := pass{lp.name, t, lane}
			if e.waiting(k) {
				continue // marked again when its back-off ends
			}
			if !lp.start(k) {
				continue // in flight: marked again when it ends
			}
			sem <- struct{}{}
			e.runs.Add(1)
			go func() {
				defer func() { <-sem; e.runs.Done() }()
				more := e.tick(ctx, lp, kernel, t, lane, lanes)
				if lp.done(k) || more {
					lp.mark(t)
				}
			}()
		}
	}
}

// tick runs one kernel pass for a tenant and reports whether it left work
// for another pass. An ending engine lets the pass finish: a run cut short
// would be recorded as a failure.
func (e *Engine) tick(ctx context.Context, lp *loop, kernel, tenant string, lane, lanes int) (more bool) {
	name := lp.name
	key := pass{name, tenant, lane}
	attempt := e.attempts(key) + 1
	// Said in the error span of this pass, should it fail: the step of the
	// back-off it starts.
	note := map[string]any{"attempt": attempt, "backoff_ms": backoff(attempt).Milliseconds(), "loop": name, "lane": lane}
	failed := true
	defer func() {
		if ctx.Err() == nil || !failed {
			e.settle(lp, key, attempt, failed)
		}
	}()
	env := map[string]string{"TENANT": tenant}
	if lanes > 1 {
		env["LANE"], env["LANES"] = strconv.Itoa(lane), strconv.Itoa(lanes)
	}
	if e.cfg.Batch > 0 {
		env["BATCH"] = strconv.Itoa(e.cfg.Batch)
	}
	start := time.Now()
	tctx, sp := telemetry.Tracer().Start(context.WithoutCancel(ctx), "kernel pass "+name, oteltrace.WithAttributes(
		attribute.String("logline.loop", name), attribute.String("logline.tenant", tenant), attribute.Int("logline.lane", lane)))
	defer sp.End()
	res, err := e.h.Tick(tctx, kernel, tenant, env, note)
	sp.SetAttributes(attribute.Int64("logline.fuel_used", res.FuelUsed), attribute.Int("logline.host_calls", res.HostCalls))
	if err == nil && res.Err != nil {
		sp.SetStatus(codes.Error, res.Err.Code)
	}
	if err != nil {
		sp.SetStatus(codes.Error, err.Error())
		e.record(key, start, "refused", err.Error())
		e.m.passes.WithLabelValues(name, "refused").Inc()
		var r *stage0.Refusal
		if errors.As(err, &r) {
			e.log.Error("kernel refused", "kernel", name, "tenant", tenant, "code", r.Code, "err", r.Message)
		} else if ctx.Err() == nil {
			e.log.Warn("kernel", "kernel", name, "tenant", tenant, "err", err)
		}
		return false
	}
	if res.Err != nil {
		e.record(key, start, "failed", res.Err.Code+": "+res.Err.Message)
		e.m.passes.WithLabelValues(name, "failed").Inc()
		e.m.duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
		e.m.fuel.WithLabelValues(name).Add(float64(res.FuelUsed))
		e.log.Warn("kernel failed", "kernel", name, "tenant", tenant, "code", res.Err.Code, "err", res.Err.Message)
		return false
	}
	failed = false
	e.record(key, start, "ok", "")
	var out passOutput
	_ = json.Unmarshal(res.Output, &out)
	e.m.observe(name, time.Since(start), res.FuelUsed, out)
	// A pass that did something is worth a line at info (what it ran,
	// refused, failed); an idle one only at debug.
	level := slog.LevelDebug
	if out.Processed > 0 || out.Ran > 0 || out.Blocked > 0 || out.PolicyErrors > 0 {
		level = slog.LevelInfo
	}
	e.log.Log(ctx, level, "kernel pass", "kernel", name, "tenant", tenant, "lane", lane, "processed", out.Processed,
		"executions", out.Ran, "failed", out.Failed, "quota_violations", out.Blocked, "policy_errors", out.PolicyErrors,
		"took", time.Since(start), "fuel", res.FuelUsed, "host_calls", res.HostCalls, "warm", res.Warm)
	return out.More
}

// LoopStatus is how a loop's passes for one tenant last went, as this
// engine saw them (Status).
type LoopStatus struct {
	Loop     string    `json:"loop"`
	Lane     int       `json:"lane"`
	Passes   int64     `json:"passes"`    // passes run since the engine started
	Failures int64     `json:"failures"`  // of which failed or refused
	LastPass time.Time `json:"last_pass"` // when the latest began
	Outcome  string    `json:"outcome"`   // the latest's: ok, failed (the kernel's error) or refused (the host would not run it)
	Error    string    `json:"error"`     // the latest's error, when it had one
}

// record notes a pass's outcome for Status. The error text is the
// kernel's or the host's own: a tenant's Status only ever shows its own
// passes.
func (e *Engine) record(k pass, start time.Time, outcome, msg string) {
	e.statusMu.Lock()
	defer e.statusMu.Unlock()
	st := e.status[k]
	if st == nil {
		st = &LoopStatus{Loop: k.loop, Lane: k.lane}
		e.status[k] = st
	}
	st.Passes++
	if outcome != "ok" {
		st.Failures++
	}
	st.LastPass, st.Outcome, st.Error = start, outcome, msg
}

// Status is how this engine's loops last ran for tenant, by loop and lane:
// only that tenant's passes, so it can be shown to the tenant's users.
func (e *Engine) Status(tenant string) []LoopStatus {
	e.statusMu.Lock()
	out := []LoopStatus{}
	for k, st := range e.status {
		if k.tenant == tenant {
			out = append(out, *st)
		}
	}
	e.statusMu.Unlock()
	slices.SortFunc(out, func(a, b LoopStatus) int {
		if c := strings.Compare(a.Loop, b.Loop); c != 0 {
			return c
		}
		return a.Lane - b.Lane
	})
	return out
}

// waiting reports whether pass k is in its back-off.
func (e *Engine) waiting(k pass) bool {
	e.failMu.Lock()
	defer e.failMu.Unlock()
	f := e.failing[k]
	return f != nil && time.Now().Before(f.until)
}

func (e *Engine) attempts(k pass) int {
	e.failMu.Lock()
	defer e.failMu.Unlock()
	if f := e.failing[k]; f != nil {
		return f.attempts
	}
	return 0
}

// settle records how pass k's run of attempt ended: a success forgets its
// failures; a failure starts the attempt's back-off, at whose end the
// tenant is marked for the loop again.
func (e *Engine) settle(lp *loop, k pass, attempt int, failed bool) {
	e.failMu.Lock()
	defer e.failMu.Unlock()
	if !failed {
		delete(e.failing, k)
		return
	}
	wait := backoff(attempt)
	e.failing[k] = &failure{attempts: attempt, until: time.Now().Add(wait)}
	e.log.Warn("kernel pass failed; backing off", "kernel", k.loop, "tenant", k.tenant, "lane", k.lane,
		"attempt", attempt, "backoff", wait)
	time.AfterFunc(wait, func() { lp.mark(k.tenant) })
}
