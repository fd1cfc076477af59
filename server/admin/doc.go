// Package admin is the site server's AdminService: what amtopsctl and
// consoles call to list and import devices, group them in collections
// (S22), start, watch and cancel bulk operations (S12–S19, C8), and manage
// agents and administrators' tokens. Calls are authenticated with bearer
// tokens over the same TLS port as agents; a read-role token may only
// read. Domain errors become gRPC status codes here and nowhere else in
// the package.
package admin
