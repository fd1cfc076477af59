// Package jobs is the whole life of a job on the site server.
//
// Phase 1 (phase1.go, its steps by concern in certs.go, directory.go,
// marks.go and payload.go, the one place the model becomes the wire job)
// runs as asynq tasks on a few fixed queues (queue.go, worker.go): task
// IDs come from the job, so a duplicate request is one task; transient
// errors are retried with backoff, permanent ones archived and recorded
// on the job. Phase 2 runs on an agent; while it does, the server signs a
// key the device made (sign.go), and its result, or the reaper's dead
// letter, has its effects here (result.go). Every secret a job or a
// device keeps is named in secrets.go and read nowhere else.
//
// The asynq plumbing lives here rather than in a package of its own: its
// task payload, its failure classifier and FailJob are the job's
// lifecycle, and a separate worker package would only forward to this one.
package jobs
