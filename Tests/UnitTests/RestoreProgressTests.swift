import DevDBProvisioning
import Testing

/// Restore progress from `pg_restore -v` (issue #16): items done of the TOC's entries, for serial
/// and parallel restores. The outputs are pg_restore 15's, captured from real restores.
@Suite struct RestoreProgressTests {
    let list = """
        ;
        ; Archive created at 2026-12-06 13:15:59 UTC
        ;     TOC Entries: 14
        ;
        ; Selected TOC Entries:
        ;
        214; 1259 16385 TABLE public a postgres
        3361; 0 0 COMMENT public TABLE a postgres
        215; 1259 16392 TABLE public b postgres
        216; 1259 16403 VIEW public v postgres
        3353; 0 16385 TABLE DATA public a postgres
        3354; 0 16392 TABLE DATA public b postgres
        3205; 2606 16391 CONSTRAINT public a a_pkey postgres
        3207; 2606 16396 CONSTRAINT public b b_pkey postgres
        3208; 1259 16402 INDEX public b_x_idx postgres
        3209; 2606 16397 FK CONSTRAINT public b b_id_fkey postgres
        """

    @Test func theTableOfContentsCountsEntriesNotComments() {
        let toc = RestoreProgress.tocEntries(list)
        #expect(toc.count == 10 && toc.contains(214) && toc.contains(3209) && !toc.contains(14))
    }

    @Test func aSerialRestoreCountsTheItemsItStarted() {
        let toc = RestoreProgress.tocEntries(list)
        let partial = """
            pg_restore: connecting to database for restore
            pg_restore: creating TABLE "public.a"
            pg_restore: creating COMMENT "public.TABLE a"
            pg_restore: creating TABLE "public.b"
            pg_restore: creating VIEW "public.v"
            pg_restore: processing data for table "public.a"
            """
        #expect(RestoreProgress.read(verbose: partial, toc: toc) == RestoreProgress(done: 5, total: 10))
        #expect(RestoreProgress.read(verbose: partial, toc: toc).phase == "restoring: 5 of 10 items")
        let whole = partial + """

            pg_restore: processing data for table "public.b"
            pg_restore: creating CONSTRAINT "public.a a_pkey"
            pg_restore: creating CONSTRAINT "public.b b_pkey"
            pg_restore: creating INDEX "public.b_x_idx"
            pg_restore: creating FK CONSTRAINT "public.b b_id_fkey"
            pg_restore: creating FK CONSTRAINT "public.b b_id_fkey"
            """
        #expect(RestoreProgress.read(verbose: whole, toc: toc).done == 10, "never more than the total")
    }

    @Test func aParallelRestoreCountsFinishedItemsOnce() {
        let toc = RestoreProgress.tocEntries(list)
        let output = """
            pg_restore: connecting to database for restore
            pg_restore: processing item 3357 ENCODING ENCODING
            pg_restore: processing item 3360 DATABASE src
            pg_restore: processing item 214 TABLE a
            pg_restore: creating TABLE "public.a"
            pg_restore: processing item 3361 COMMENT TABLE a
            pg_restore: creating COMMENT "public.TABLE a"
            pg_restore: processing item 215 TABLE b
            pg_restore: creating TABLE "public.b"
            pg_restore: processing item 216 VIEW v
            pg_restore: creating VIEW "public.v"
            pg_restore: entering main parallel loop
            pg_restore: launching item 3353 TABLE DATA a
            pg_restore: launching item 3354 TABLE DATA b
            pg_restore: processing data for table "public.a"
            pg_restore: processing data for table "public.b"
            pg_restore: finished item 3354 TABLE DATA b
            pg_restore: launching item 3207 CONSTRAINT b b_pkey
            pg_restore: creating CONSTRAINT "public.b b_pkey"
            """
        // Four items before the loop (not ENCODING or DATABASE: they are no TOC entries), one finished in it;
        // launched and still running ones do not count.
        #expect(RestoreProgress.read(verbose: output, toc: toc) == RestoreProgress(done: 5, total: 10))
    }
}
