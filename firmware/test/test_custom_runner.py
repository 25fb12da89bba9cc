"""`pio test` runner for tinylls (test_framework = custom): reads the lines the on-target suite
(firmware/test/*/) prints in QEMU - "TLTEST <name> PASS", "TLTEST <name> FAIL <detail>",
"TLTEST-END <failed>" - into PlatformIO's test results."""
from platformio.public import TestCase, TestRunnerBase, TestStatus


class CustomTestRunner(TestRunnerBase):
    def on_testing_line_output(self, line):
        text = line.strip()
        if not text:
            return
        print(text)
        if text.startswith("TLTEST-END"):
            self.test_suite.on_finish()
            return
        parts = text.split(None, 3)
        if len(parts) >= 3 and parts[0] == "TLTEST":
            status = TestStatus.PASSED if parts[2] == "PASS" else TestStatus.FAILED
            self.test_suite.add_case(TestCase(name=parts[1], status=status,
                                              message=parts[3] if len(parts) > 3 else None))
