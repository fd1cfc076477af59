// Package domain is the amtops model: devices, collections, certificate
// records, jobs and batches, the operations log and agents. It depends on
// nothing but the standard library; adapters (Redis, asynq, LDAP, gRPC,
// WS-Man) convert to and from these types at the edges.
package domain
