// Package proxy is the connection path of the AUTO_PASSTHROUGH listener: it
// accepts client connections (SO_REUSEPORT sockets, a max-connections cap),
// reads the TLS ClientHello within a deadline and a byte cap without
// decrypting anything, resolves the SNI to a cluster of the current mesh
// snapshot, asks a Picker for an endpoint, dials it with a timeout and a
// bounded number of attempts on hosts not yet tried, replays the ClientHello
// and hands both sockets to a Forwarder until both directions end.
//
// It does not choose hosts (the Picker does, see package balancer) and knows
// nothing of eBPF (a Forwarder does, see package ebpf); cmd/eastwest wires
// them. Every refused connection is closed without a byte written back,
// counted by reason and logged.
//
//	srv, err := proxy.New(proxy.Config{Address: "0.0.0.0:15443"}, proxy.Deps{
//		Store: store, Picker: balancer, Forwarder: proxy.SpliceForwarder{},
//	})
//	go srv.Serve()
//	...
//	srv.Shutdown(ctx, time.Second)
package proxy
