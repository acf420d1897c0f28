package sdktest_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/sdktest"
)

// Order is the input of the checkout workflow.
type Order struct {
	ID     string `json:"id"`
	Amount int    `json:"amount"`
}

// checkout charges an order, waits out a 30-day cooling-off period, then waits for the
// customer's confirmation.
var checkout = sdk.New("checkout", func(c *sdk.Context, o Order) (string, error) {
	charge, err := sdk.Step(c, "charge", func(ctx context.Context) (string, error) {
		return "ch_" + o.ID, nil // the payment provider's call goes here
	})
	if err != nil {
		return "", err
	}
	if err := sdk.Sleep(c, "cooling-off", 30*24*time.Hour); err != nil {
		return "", err
	}
	keep, err := sdk.Receive[bool](c, "confirmation", "confirm")
	if err != nil {
		return "", err
	}
	if !keep {
		return "refund " + charge, nil
	}
	return "keep " + charge, nil
})

// exampleT stands in for the *testing.T that a test passes to sdktest.New.
type exampleT struct{}

func (exampleT) Helper()                           {}
func (exampleT) Fatalf(format string, args ...any) { log.Fatalf(format, args...) }
func (exampleT) Cleanup(func())                    {} // the memory store needs no closing here

func Example() {
	t := exampleT{} // in a test: func TestCheckout(t *testing.T)
	ctx := context.Background()

	env := sdktest.New(t, checkout)
	// The payment provider is down for the first two attempts; the step's retry policy
	// (3 attempts by default) gets the charge through on the third.
	env.FailStep("checkout", "charge", 2, errors.New("payment provider unavailable"))

	h, err := checkout.Start(ctx, env.Engine(), "order-1", Order{ID: "o1", Amount: 4200})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	env.Drain() // runs the retries and jumps the 30 days of the sleep: milliseconds of real time
	fmt.Printf("after %d days: %s, waiting for a %s\n",
		int(env.Now().Sub(sdktest.DefaultStart).Hours()/24), env.State(h), env.Describe(h).Waiting)

	if err := env.Send(h, "confirm", true); err != nil {
		t.Fatalf("send: %v", err)
	}
	env.Drain()
	out, err := sdktest.Result(env, h)
	fmt.Println(out, err)
	fmt.Println("charge attempts:", env.Step(h, "charge").Attempts, "errors recorded:", len(env.Errors(h)))
	// Output:
	// after 30 days: idle, waiting for a message
	// keep ch_o1 <nil>
	// charge attempts: 3 errors recorded: 2
}
