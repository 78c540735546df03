package proxy_test

// concurrent is how many connections TestHoldsManyConcurrentConnections
// holds at once. A proxied connection takes two descriptors, and this
// machine's hard limit is 20,000 per process (raising it needs
// CAP_SYS_RESOURCE), so one process holds at most about 9,990: the test
// runs the proxy as two worker processes.
const concurrent = 10000

var concurrentArgs = []string{"--access-log", "off", "--max-connections", "0", "--workers", "2"}
