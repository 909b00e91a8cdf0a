/* testclient.h: the spec runner's HTTP and SSE client (request() and subscribe() of spec files). */
#ifndef SLUICE_TESTCLIENT_H
#define SLUICE_TESTCLIENT_H

#include <lua.h>

/* testing.raw(bytes [, sse]) (upvalue 1: the appstate): sends the raw request to the test
 * instance's listener and yields the running task until the answer: status, headers, body,
 * wire_bytes; for sse, 200 and a stream handle once the headers arrived; nil, message on failure. */
int testclient_raw(lua_State *L);
/* Creates the stream handle's metatable ("sluice.tclient": next_event, close, comments). */
void testclient_register(lua_State *L);

#endif
