// Command fakellm serves the stand-in model provider of package standin (the
// OpenAI and Ollama chat wire formats) until SIGINT or SIGTERM:
//
//	go run ./tools/fakellm -addr 127.0.0.1:8089 [-key SECRET] [-script FILE]
//
// It prints "fakellm listening on http://ADDR" once it accepts connections.
// Exit codes: 0 stopped by a signal, 1 serving failed, 2 bad usage or script.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/logline/logline/tools/fakellm/standin"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8089", "listen address (host:port; port 0 picks one)")
	key := flag.String("key", "", "require \"Authorization: Bearer KEY\" on the OpenAI routes (empty: no auth)")
	script := flag.String("script", "", `JSON script: [{"match":"...","replies":[{"content":"...","delay_ms":0,...}]}]`)
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "fakellm: unexpected arguments:", flag.Args())
		flag.Usage()
		os.Exit(2)
	}

	s := standin.New(*key)
	if *script != "" {
		rules, err := loadScript(*script)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fakellm:", err)
			os.Exit(2)
		}
		s.Load(rules)
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakellm:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		// Requests inherit ctx, so a signal also ends the scripted delays.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	fmt.Printf("fakellm listening on http://%s\n", ln.Addr())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		fmt.Fprintln(os.Stderr, "fakellm:", err)
		os.Exit(1)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close()
	}
}

func loadScript(path string) ([]standin.Rule, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rules, err := standin.LoadScript(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return rules, nil
}
