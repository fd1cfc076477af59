package discovery

import "time"

// Reserve books l's next slot without sleeping (tests).
func Reserve(l *RateLimiter) time.Duration { return l.reserve() }
