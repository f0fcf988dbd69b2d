// Command faketelegram serves the stand-in Telegram Bot API of package
// standin until SIGINT or SIGTERM, printing every sendMessage it receives:
//
//	go run ./tools/faketelegram -addr 127.0.0.1:8090 -token 123456:TEST-token
//
// It prints "faketelegram listening on http://ADDR" once it accepts
// connections, then one line per sendMessage ("sendMessage chat_id=42
// reply_to=7 status=200 text=..."). Exit codes: 0 stopped by a signal, 1
// serving failed, 2 bad usage.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/logline/logline/tools/faketelegram/standin"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address (host:port; port 0 picks one)")
	token := flag.String("token", "123456:TEST-token", "the bot token the stand-in accepts in /bot<token>/...")
	flag.Parse()
	if flag.NArg() > 0 || *token == "" {
		fmt.Fprintln(os.Stderr, "faketelegram: unexpected arguments or an empty -token")
		flag.Usage()
		os.Exit(2)
	}
	s := standin.New(*token)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faketelegram:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	printed := 0
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.ServeHTTP(w, r)
			// One line per sendMessage, in order (handlers may overlap).
			sent := s.Sent()
			for ; printed < len(sent); printed++ {
				m := sent[printed]
				fmt.Printf("sendMessage chat_id=%s reply_to=%d status=%d text=%s\n", m.ChatID, m.ReplyTo, m.Status, strconv.Quote(m.Text))
			}
		}),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	// Serialize the handler: printing keeps its own position in Sent.
	inner := srv.Handler
	sem := make(chan struct{}, 1)
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sem <- struct{}{}
		defer func() { <-sem }()
		inner.ServeHTTP(w, r)
	})
	fmt.Printf("faketelegram listening on http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		fmt.Fprintln(os.Stderr, "faketelegram:", err)
		os.Exit(1)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close()
	}
}
