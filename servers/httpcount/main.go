// Command httpcount answers each request with a counter that `service update` keeps.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"sync/atomic"

	"github.com/reincarnation/rs/sef/sefhttp"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	flag.Parse()
	var count atomic.Uint64
	srv := &sefhttp.Server{
		Addr: *addr,
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
	}
	if err := srv.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}
