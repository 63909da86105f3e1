package sefhttp_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/reincarnation/rs/sef/sefhttp"
)

// The counter of the package doc. Under rs, `service update` keeps its
// count and its clients' connections; here it runs standalone.
func Example() {
	var count atomic.Uint64
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	addrs := make(chan net.Addr, 1)
	srv := &sefhttp.Server{
		Addr: "127.0.0.1:0",
		HTTP: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, count.Add(1))
		})},
		Save: func(w io.Writer) error {
			_, err := fmt.Fprint(w, count.Load())
			return err
		},
		Restore: func(r io.Reader) error {
			var n uint64
			_, err := fmt.Fscan(r, &n)
			count.Store(n)
			return err
		},
		Logger:   slog.New(slog.DiscardHandler),
		OnListen: func(a net.Addr) { addrs <- a }, // for this example's client
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()

	var url string
	select {
	case a := <-addrs:
		url = "http://" + a.String() + "/"
	case err := <-done:
		fmt.Println(err)
		return
	}
	for range 2 {
		resp, err := http.Get(url)
		if err != nil {
			fmt.Println(err)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Print(string(b))
	}
	stop()
	fmt.Println(<-done)
	// Output:
	// 1
	// 2
	// context canceled
}
