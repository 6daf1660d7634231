/*
 * codecache.h: handlers' scripts kept compiled between events by the
 * FastCGI process, as PHP's opcache keeps a script compiled between
 * requests.
 *
 * The guest's python3 zygote compiles a handler's script before any
 * tenant code runs and sends the result as CODE (include/proto.h).  The
 * next event of the same handler with the very same script bytes takes
 * it along and skips the compile, 12 of 50 ms under TCG for the checkout
 * example.  What one handler's guests sent is only ever given to that
 * handler's later events.
 */
#ifndef VMCGI_CODECACHE_H
#define VMCGI_CODECACHE_H

#include <stddef.h>
#include <stdint.h>

/* Scripts above this are not kept; their code would rarely fit CODE. */
#define CODECACHE_MAX_SCRIPT (256 * 1024)
/*
 * Scripts and code kept, all handlers together; past it, the entries
 * used least recently go.
 */
#define CODECACHE_MAX_TOTAL (64 * 1024 * 1024)

struct codecache;

/* An empty cache for nhandlers handlers; NULL with errno on failure. */
struct codecache *codecache_new(size_t nhandlers);
void	codecache_free(struct codecache *cc);

/*
 * The code kept for handler h if it was compiled from exactly script
 * (slen bytes): returns its length and a malloc'd copy in *code, or 0 if
 * there is none (or no memory for the copy).
 */
size_t	codecache_get(struct codecache *cc, size_t h, const char *script,
	    size_t slen, uint8_t **code);

/*
 * Keeps code (clen bytes, from a guest) as handler h's for script,
 * replacing what h had and dropping the entries used least recently if
 * the total would pass its limit.  Returns 0, -EFBIG when the script is
 * over its limit (h then keeps nothing), or -ENOMEM.
 */
int	codecache_put(struct codecache *cc, size_t h, const char *script,
	    size_t slen, const uint8_t *code, size_t clen);

#endif /* VMCGI_CODECACHE_H */
