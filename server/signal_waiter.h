// Turns SIGTERM and SIGINT into an ordinary event for graceful shutdown: the signals are blocked
// in every thread (so gRPC's threads never take them) and one thread waits for them with sigwait,
// where it may safely lock mutexes and call into gRPC, which a signal handler may not.
#ifndef ATTNBENCH_SERVER_SIGNAL_WAITER_H_
#define ATTNBENCH_SERVER_SIGNAL_WAITER_H_

namespace attnbench::server {

// Call before any thread starts; threads created later inherit the mask.
void BlockTerminationSignals();

// Blocks until SIGTERM or SIGINT arrives and returns its number.
int WaitForTerminationSignal();

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_SIGNAL_WAITER_H_
