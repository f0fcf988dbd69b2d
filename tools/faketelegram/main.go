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
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"

	"github.com/logline/logline/tools/faketelegram/standin"
	"github.com/logline/logline/tools/internal/serve"
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
	printed := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.ServeHTTP(w, r)
		// One line per sendMessage, in order (handlers may overlap).
		sent := s.Sent()
		for ; printed < len(sent); printed++ {
			m := sent[printed]
			fmt.Printf("sendMessage chat_id=%s reply_to=%d status=%d text=%s\n", m.ChatID, m.ReplyTo, m.Status, strconv.Quote(m.Text))
		}
	})
	// Serialize the handler: printing keeps its own position in Sent.
	sem := make(chan struct{}, 1)
	serve.Main("faketelegram", *addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sem <- struct{}{}
		defer func() { <-sem }()
		h.ServeHTTP(w, r)
	}))
}
