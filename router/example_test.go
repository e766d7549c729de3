package router_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/router"
)

// serve stands for your own code: handle the request with the given
// version and return the status written.
func serve(w http.ResponseWriter, r *http.Request, version string) int {
	fmt.Fprintln(w, "served by", version)
	return http.StatusOK
}

// Example is the Go SDK example of docs/ROUTERS.md (a test checks the two
// are the same): a handler that picks a variant per user and reports each
// request.
func Example() {
	// BEGIN ROUTERS.md
	nc, err := nats.Connect(nats.DefaultURL, nats.MaxReconnects(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	// One watcher over KV verdict_routes; lookups are local and lock-free.
	routes := router.NewTable(js, router.TableOptions{})
	go routes.Run(ctx) // returns when ctx ends

	// Telemetry: one batch per 100 requests of a variant, or every second.
	events, err := router.NewEmitter(nc, router.EmitterOptions{Batch: 100})
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		events.Close(flush) // publishes what is queued, waits for acks
	}()

	http.HandleFunc("/checkout", func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		user := r.Header.Get("X-User-Id")
		variant := routes.Assign("checkout-42", user) // sticky per user
		route, _ := routes.Route("checkout-42")
		status := serve(w, r, route.Version(variant))
		events.Emit(router.Event{ // never blocks; drops and counts when full
			Rollout: "checkout-42", Variant: variant, Unit: user,
			Time: start, Latency: time.Since(start), Failed: status >= 500,
		})
	})
	srv := &http.Server{Addr: ":8080"}
	go func() { <-ctx.Done(); srv.Shutdown(context.Background()) }()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Print(err)
	}
	// END ROUTERS.md
}

// ExamplePoint shows the sticky assignment rule with the test vectors of
// docs/ROUTERS.md.
func ExamplePoint() {
	for _, unit := range []string{"user-123", "a", "session-9f2c"} {
		r := router.Route{Weight: 5}
		fmt.Printf("%s %.4f %v\n", unit, router.Point(unit), r.Assign(unit))
	}
	// Output:
	// user-123 76.0083 baseline
	// a 64.1996 baseline
	// session-9f2c 3.4182 canary
}
