package sandbox_test

import (
	"context"
	"fmt"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox"
)

// echo is a hand-assembled guest: run() { output(0, input(0, 65536)) }.
var echo = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
	0x01, 0x0b, 0x02, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7f, 0x60, 0x00, 0x01, 0x7f, // types
	0x02, 0x22, 0x02, // imports: logline.input, logline.output
	0x07, 'l', 'o', 'g', 'l', 'i', 'n', 'e', 0x05, 'i', 'n', 'p', 'u', 't', 0x00, 0x00,
	0x07, 'l', 'o', 'g', 'l', 'i', 'n', 'e', 0x06, 'o', 'u', 't', 'p', 'u', 't', 0x00, 0x00,
	0x03, 0x02, 0x01, 0x01, // one function of type 1
	0x05, 0x03, 0x01, 0x00, 0x01, // one page of memory
	0x07, 0x07, 0x01, 0x03, 'r', 'u', 'n', 0x00, 0x02, // export run
	0x0a, 0x10, 0x01, 0x0e, 0x00, // code
	0x41, 0x00, 0x41, 0x00, 0x41, 0x80, 0x80, 0x04, 0x10, 0x00, 0x10, 0x01, 0x0b,
}

func ExampleRuntime_Run() {
	ctx := context.Background()
	r, err := sandbox.New(ctx, sandbox.Config{})
	if err != nil {
		panic(err)
	}
	defer r.Close(ctx)

	m, err := r.Load(ctx, echo)
	if err != nil {
		panic(err)
	}
	res := r.Run(ctx, m, sandbox.Request{
		Tenant: "acme",
		Tier:   abi.TierFunction,
		Input:  []byte(`{"hello":"world"}`),
	})
	fmt.Println(string(res.Output), res.Err, res.FuelUsed > 0)

	// Garbage is refused at Load with a stable code.
	_, err = r.Load(ctx, []byte("not wasm"))
	fmt.Println(sandbox.CodeOf(err))
	// Output:
	// {"hello":"world"} <nil> true
	// invalid_module
}
