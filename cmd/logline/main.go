// Command logline is the LogLine host: the ledger CLI, Stage-0, and the
// server. The command-line contract (flags, environment, exit codes) is
// contract §10; scripts and tests rely on it.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr}, os.Getenv)
	stop()
	os.Exit(code)
}
