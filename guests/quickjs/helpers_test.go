package quickjs_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/guests/quickjs"
	"github.com/logline/logline/host/sandbox"
)

// One runtime for the package's tests, as the host has one: the guest
// compiles once and every test prepares its own sources on it.
var shared struct {
	once sync.Once
	rt   *sandbox.Runtime
	base *sandbox.Module
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.rt != nil {
		_ = shared.rt.Close(context.Background())
	}
	os.Exit(code)
}

func guest(t testing.TB) (*sandbox.Runtime, *sandbox.Module) {
	t.Helper()
	shared.once.Do(func() {
		ctx := context.Background()
		shared.rt, shared.err = sandbox.New(ctx, sandbox.Config{})
		if shared.err == nil {
			shared.base, shared.err = shared.rt.Load(ctx, quickjs.Wasm)
		}
	})
	require.NoError(t, shared.err)
	return shared.rt, shared.base
}

// prepare compiles src as kind, failing the test if it does not compile.
func prepare(t testing.TB, kind quickjs.Kind, src string) *sandbox.Module {
	t.Helper()
	rt, base := guest(t)
	m, err := rt.Prepare(context.Background(), base, quickjs.Init(kind, src, ""))
	require.NoError(t, err)
	return m
}

// prepareErr compiles src as kind, which must fail, and returns the error.
func prepareErr(t testing.TB, kind quickjs.Kind, name, src string) *sandbox.Error {
	t.Helper()
	rt, base := guest(t)
	_, err := rt.Prepare(context.Background(), base, quickjs.Init(kind, src, name))
	var se *sandbox.Error
	require.True(t, errors.As(err, &se), "want a *sandbox.Error, got %v", err)
	return se
}

// clock is the run's time in the tests that need one.
var clock = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)

func fixedClock() time.Time { return clock }

// run runs m once with input at tier (a function when tier is "").
func run(t testing.TB, m *sandbox.Module, tier abi.Tier, input string) sandbox.Result {
	t.Helper()
	rt, _ := guest(t)
	req := sandbox.Request{Tenant: "t", Tier: tier, Clock: fixedClock, Seed: 1}
	if input != "" {
		req.Input = []byte(input)
	}
	return rt.Run(context.Background(), m, req)
}

// runReq runs m with a request the test built.
func runReq(t testing.TB, m *sandbox.Module, req sandbox.Request) sandbox.Result {
	t.Helper()
	rt, _ := guest(t)
	if req.Tenant == "" {
		req.Tenant = "t"
	}
	if req.Clock == nil {
		req.Clock = fixedClock
	}
	return rt.Run(context.Background(), m, req)
}

// ok fails the test unless the run completed.
func ok(t testing.TB, res sandbox.Result) {
	t.Helper()
	require.Nil(t, res.Err, "run failed: %+v\nlogs: %+v", res.Err, res.Logs)
}

// failed fails the test unless the run ended with code.
func failed(t testing.TB, res sandbox.Result, code string) *abi.Error {
	t.Helper()
	require.NotNil(t, res.Err, "run completed with %s", res.Output)
	require.Equal(t, code, res.Err.Code, "message: %s", res.Err.Message)
	return res.Err
}
