// Package sefhttp runs a net/http server under sef, with live update:
// `service update` moves it to a new binary and no client sees a failed
// request, a lost response or a closed connection.
//
// Across an update: the listener is rs's (sef's Listen), so new clients
// wait in its backlog and the new instance accepts them; requests in
// flight finish in the old instance; connections idle between requests
// (keep-alive) park at once, those in a request as soon as its response
// is written, and then go, unclosed, to the new instance, which serves
// their next request; the service's own state (Save, Restore) goes along,
// taken at the point where no request is in flight anywhere. If the
// update is rolled back, everything resumes in the old instance. A
// graceful stop (rs's stop, SIGTERM) finishes the requests in flight.
//
// A counter whose every response carries the next number, kept across
// updates (servers/httpcount):
//
//	func main() {
//		addr := flag.String("listen", "127.0.0.1:8080", "address to serve on")
//		flag.Parse()
//		var count atomic.Uint64
//		srv := &sefhttp.Server{
//			Addr: *addr,
//			HTTP: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
//				fmt.Fprintln(w, count.Add(1))
//			})},
//			Save: func(w io.Writer) error {
//				_, err := fmt.Fprint(w, count.Load())
//				return err
//			},
//			Restore: func(r io.Reader) error {
//				var n uint64
//				_, err := fmt.Fscan(r, &n)
//				count.Store(n)
//				return err
//			},
//		}
//		if err := srv.Run(context.Background()); err != nil {
//			log.Fatal(err)
//		}
//	}
//
// Handlers run on net/http's goroutines, not on sef's main loop, so the
// state they share needs the usual care (an atomic, a mutex); Save and
// Restore run while no handler does.
//
// Limits: HTTP/1.x without TLS (a TLS session's keys live in the old
// process). A client that pipelines (sends its next request before the
// response to the last one has arrived) may have bytes of it buffered
// inside net/http, which an idle connection cannot hand over; browsers,
// Go's client, curl and ab do not pipeline.
package sefhttp
