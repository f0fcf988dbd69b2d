//go:build !wasip1

// Command precompile fills a wazero compilation cache with the given modules.
// The SDK's tests run it (built without -race) when they themselves run
// under the race detector, which makes wazero's compiler some 30 times
// slower: compiling three Go guests drops from minutes to seconds.
//
//	go run ./guests/sdk/go/testdata/precompile CACHE_DIR a.wasm b.wasm ...
package main

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/tetratelabs/wazero"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: precompile CACHE_DIR MODULE.wasm ...")
		os.Exit(2)
	}
	ctx := context.Background()
	cache, err := wazero.NewCompilationCacheWithDir(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCompilationCache(cache))
	defer rt.Close(ctx)
	var wg sync.WaitGroup
	errs := make([]error, len(os.Args)-2)
	for i, file := range os.Args[2:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := os.ReadFile(file)
			if err == nil {
				_, err = rt.CompileModule(ctx, b)
			}
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", file, err)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
