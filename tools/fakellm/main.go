// Command fakellm serves the stand-in model provider of package standin (the
// OpenAI and Ollama chat wire formats) until SIGINT or SIGTERM:
//
//	go run ./tools/fakellm -addr 127.0.0.1:8089 [-key SECRET] [-script FILE]
//
// It prints "fakellm listening on http://ADDR" once it accepts connections.
// Exit codes: 0 stopped by a signal, 1 serving failed, 2 bad usage or script.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/logline/logline/tools/fakellm/standin"
	"github.com/logline/logline/tools/internal/serve"
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

	serve.Main("fakellm", *addr, s)
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
